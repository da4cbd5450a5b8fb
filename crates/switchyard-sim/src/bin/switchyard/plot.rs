//! `simulate --out DIR`: the comparison's plots, each written as SVG and PNG.
//!
//! * `latency_cdf`: the end-to-end latency CDF of completed tasks, one line per policy,
//!   latency on a log axis;
//! * `utilization_POLICY`: each node's utilisation over virtual time under the switchyard
//!   policy (or the first policy run, when switchyard was not), one line per node;
//! * `shed_failed`: tasks shed and failed per time bucket, one line per policy.
//!
//! Text is drawn with the DejaVu Sans font bundled in `assets/` (registered from bytes), so
//! nothing depends on the system's fonts or font libraries.
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use switchyard_sim::{SimOutcome, TaskStatus, Workload, POLICY_NAMES};

use crate::Error;

/// DejaVu Sans 2.37 (see `assets/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../../../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
const SIZE: (u32, u32) = (1000, 600);
/// Points per CDF line.
const CDF_POINTS: usize = 400;

/// Tableau's ten categorical colours: policies take theirs by their place in
/// [`POLICY_NAMES`], nodes by fleet order.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn policy_color(name: &str) -> RGBColor {
    PALETTE[POLICY_NAMES.iter().position(|p| *p == name).unwrap_or(0) % PALETTE.len()]
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// A chart that draws on any plotters backend.
trait Chart {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

/// Writes every plot of `outcomes` (one per policy, run over `workload`) under `dir`,
/// created if missing; returns the files written.
pub fn write_all(
    dir: &Path,
    workload: &Workload,
    outcomes: &[SimOutcome],
) -> Result<Vec<PathBuf>, Error> {
    plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
        .map_err(|_| "the bundled font does not parse")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    written.extend(save(dir, "latency_cdf", &LatencyCdf::new(outcomes))?);
    if let Some(o) = outcomes
        .iter()
        .find(|o| o.report.policy == "switchyard")
        .or(outcomes.first())
    {
        let chart = Utilization::new(workload, o);
        written.extend(save(
            dir,
            &format!("utilization_{}", o.report.policy),
            &chart,
        )?);
    }
    written.extend(save(dir, "shed_failed", &ShedFailed::new(outcomes))?);
    Ok(written)
}

/// Draws `chart` into `DIR/STEM.svg` and `DIR/STEM.png`.
fn save(dir: &Path, stem: &str, chart: &impl Chart) -> Result<[PathBuf; 2], Error> {
    let svg_path = dir.join(format!("{stem}.svg"));
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        chart.draw(&root)?;
        root.present().map_err(err)?;
    }
    std::fs::write(&svg_path, svg)
        .map_err(|e| format!("cannot write {}: {e}", svg_path.display()))?;

    let png_path = dir.join(format!("{stem}.png"));
    let mut rgb = vec![0u8; SIZE.0 as usize * SIZE.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        chart.draw(&root)?;
        root.present().map_err(err)?;
    }
    write_png(&png_path, &rgb).map_err(|e| format!("cannot write {}: {e}", png_path.display()))?;
    Ok([svg_path, png_path])
}

fn write_png(path: &Path, rgb: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut enc = png::Encoder::new(file, SIZE.0, SIZE.1);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header()?;
    w.write_image_data(rgb)?;
    w.finish()?;
    Ok(())
}

/// A tick label: at most three decimals, none when whole ("500", "0.25").
fn tick(v: &f64) -> String {
    format!("{}", (v * 1000.0).round() / 1000.0)
}

/// A bucket width for titles: "10 s", "200 ms".
fn duration(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{} s", ns as f64 / 1e9)
    } else {
        format!("{} ms", ns as f64 / 1e6)
    }
}

/// One policy's CDF line.
struct CdfLine {
    policy: String,
    completed: usize,
    /// (latency ms, share of completed tasks at or below it).
    points: Vec<(f64, f64)>,
}

/// End-to-end latency CDF per policy.
struct LatencyCdf {
    lines: Vec<CdfLine>,
}

impl LatencyCdf {
    fn new(outcomes: &[SimOutcome]) -> Self {
        let lines = outcomes
            .iter()
            .map(|o| {
                let mut e2e: Vec<f64> = o
                    .records
                    .iter()
                    .filter(|r| r.status == TaskStatus::Completed)
                    .map(|r| r.e2e_ms.max(1e-3))
                    .collect();
                e2e.sort_by(f64::total_cmp);
                let n = e2e.len();
                let mut points: Vec<(f64, f64)> = Vec::new();
                if n > 0 {
                    let steps = CDF_POINTS.min(n);
                    for k in 0..=steps {
                        let i = (n - 1) * k / steps;
                        points.push((e2e[i], (i + 1) as f64 / n as f64));
                    }
                    points.dedup();
                }
                CdfLine {
                    policy: o.report.policy.clone(),
                    completed: n,
                    points,
                }
            })
            .collect();
        Self { lines }
    }
}

impl Chart for LatencyCdf {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let xs = self.lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
        let lo = xs.clone().fold(f64::INFINITY, f64::min);
        let hi = xs.fold(0.0, f64::max);
        let (lo, hi) = if lo.is_finite() && hi > lo {
            (lo, hi)
        } else {
            (1.0, 10.0)
        };
        let mut chart = ChartBuilder::on(root)
            .caption(
                "End-to-end latency CDF (completed tasks, virtual time)",
                (FAMILY, 22),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((lo * 0.9..hi * 1.1).log_scale(), 0.0..1.0)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("end-to-end latency, ms (log scale)")
            .y_desc("share of completed tasks")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.1}"))
            .label_style((FAMILY, 14))
            .draw()
            .map_err(err)?;
        for l in &self.lines {
            let color = policy_color(&l.policy);
            chart
                .draw_series(LineSeries::new(
                    l.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(err)?
                .label(format!("{} ({} completed)", l.policy, l.completed))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 14))
            .draw()
            .map_err(err)?;
        Ok(())
    }
}

/// Per-node utilisation over virtual time under one policy.
struct Utilization {
    policy: String,
    interval_ns: u64,
    /// (node name, utilisation per bucket).
    nodes: Vec<(String, Vec<f64>)>,
}

impl Utilization {
    fn new(workload: &Workload, o: &SimOutcome) -> Self {
        Self {
            policy: o.report.policy.clone(),
            interval_ns: o.series.interval_ns,
            nodes: workload
                .fleet
                .nodes
                .iter()
                .map(|n| n.name.clone())
                .zip(o.series.node_utilization.iter().cloned())
                .collect(),
        }
    }
}

impl Chart for Utilization {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let iv = self.interval_ns as f64 / 1e9;
        let buckets = self.nodes.iter().map(|n| n.1.len()).max().unwrap_or(0);
        let end = (buckets as f64 * iv).max(iv);
        let top = self
            .nodes
            .iter()
            .flat_map(|n| n.1.iter())
            .fold(0.0f64, |a, &u| a.max(u * 100.0))
            .max(1.0)
            * 1.05;
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "Node utilisation under {} (busy sequences / max concurrency, mean per {})",
                    self.policy,
                    duration(self.interval_ns)
                ),
                (FAMILY, 20),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..end, 0.0..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("virtual time, s")
            .x_label_formatter(&tick)
            .y_desc("utilisation, %")
            .y_label_formatter(&tick)
            .label_style((FAMILY, 14))
            .draw()
            .map_err(err)?;
        for (k, (name, util)) in self.nodes.iter().enumerate() {
            let color = PALETTE[k % PALETTE.len()];
            let points = util
                .iter()
                .enumerate()
                .map(|(b, u)| ((b as f64 + 0.5) * iv, u * 100.0));
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(1)))
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 13))
            .draw()
            .map_err(err)?;
        Ok(())
    }
}

/// One policy's shed and failed tasks per bucket.
struct Counts {
    policy: String,
    shed: Vec<u32>,
    failed: Vec<u32>,
}

/// Shed and failed tasks per bucket, per policy.
struct ShedFailed {
    interval_ns: u64,
    lines: Vec<Counts>,
}

impl ShedFailed {
    fn new(outcomes: &[SimOutcome]) -> Self {
        Self {
            interval_ns: outcomes.first().map_or(1, |o| o.series.interval_ns),
            lines: outcomes
                .iter()
                .map(|o| Counts {
                    policy: o.report.policy.clone(),
                    shed: o.series.shed.clone(),
                    failed: o.series.failed.clone(),
                })
                .collect(),
        }
    }

    fn panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        what: &str,
        pick: fn(&Counts) -> &[u32],
    ) -> Result<(), String> {
        let iv = self.interval_ns as f64 / 1e9;
        let buckets = self.lines.iter().map(|l| pick(l).len()).max().unwrap_or(0);
        let end = (buckets as f64 * iv).max(iv);
        // Counts on an integer axis, so ticks are whole tasks.
        let top = self
            .lines
            .iter()
            .flat_map(|l| pick(l).iter().copied())
            .max()
            .unwrap_or(0)
            .saturating_add(1)
            .max(2);
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!(
                    "Tasks {what} per {} of virtual time",
                    duration(self.interval_ns)
                ),
                (FAMILY, 18),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..end, 0..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("virtual time, s")
            .x_label_formatter(&tick)
            .y_desc(format!("tasks {what}"))
            .y_labels(top.min(10) as usize + 1)
            .label_style((FAMILY, 13))
            .draw()
            .map_err(err)?;
        for line in &self.lines {
            let name = &line.policy;
            let counts = pick(line);
            let color = policy_color(name);
            let points = counts
                .iter()
                .enumerate()
                .map(|(b, &c)| ((b as f64 + 0.5) * iv, c));
            let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(err)?
                .label(format!("{name} ({total} in all)"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 12))
            .draw()
            .map_err(err)?;
        Ok(())
    }
}

impl Chart for ShedFailed {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let panels = root.split_evenly((2, 1));
        self.panel(&panels[0], "shed", |l| &l.shed)?;
        self.panel(&panels[1], "failed", |l| &l.failed)?;
        Ok(())
    }
}
