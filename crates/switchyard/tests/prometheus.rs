//! The Prometheus exposition: a strict parser for text format 0.0.4 checks what
//! `prometheus::render` writes for a real dispatcher, directly and scraped over HTTP.
// Not library code: std's primitives are fine here (the shim rule is for src/).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use switchyard::prometheus::{render, CONTENT_TYPE, DECISION_BUCKETS_NS};
use switchyard::{
    Backend, Completion, Dispatcher, NodeSpec, Outcome, Priority, RouteError, RouteOptions, Router,
    RoutingMetrics, Task, Ticket,
};

// ===== a strict parser for the text format =====

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

#[derive(Debug, Default)]
struct Exposition {
    /// Family name → type.
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// Samples of `name` whose labels include `with`.
    fn find(&self, name: &str, with: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && with
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The one sample of `name` with exactly these labels.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<_> = self
            .find(name, labels)
            .into_iter()
            .filter(|s| s.labels.len() == labels.len())
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
        found[0].value
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// A float as the format allows it: `+Inf`, `-Inf`, `NaN` or a decimal/exponent number.
fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => return Ok(f64::INFINITY),
        "-Inf" => return Ok(f64::NEG_INFINITY),
        "NaN" => return Ok(f64::NAN),
        _ => {}
    }
    let ok_chars = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
        && s.chars().any(|c| c.is_ascii_digit());
    if !ok_chars {
        return Err(format!("bad value `{s}`"));
    }
    s.parse::<f64>()
        .map_err(|e| format!("bad value `{s}`: {e}"))
}

/// The family a sample belongs to, given the declared types.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            match types.get(base).map(String::as_str) {
                Some("histogram") => return Some(base),
                Some("summary") if suffix != "_bucket" => return Some(base),
                _ => {}
            }
        }
    }
    None
}

/// Parses `{k="v",...}` starting after the `{`; returns the labels and the rest after `}`.
fn parse_labels(mut s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = s.find('=').ok_or("label without `=`")?;
        let key = &s[..eq];
        if !is_label_name(key) {
            return Err(format!("bad label name `{key}`"));
        }
        s = s[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err("raw newline in a label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(key.to_string(), value).is_some() {
            return Err(format!("label `{key}` repeated"));
        }
        s = &s[end + 1..];
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
            if s.starts_with('}') {
                return Err("trailing comma".into());
            }
        } else if !s.starts_with('}') {
            return Err("expected `,` or `}` after a label".into());
        }
    }
}

/// Parses a whole exposition strictly: every line ends in `\n`; `# HELP`/`# TYPE` once per
/// family, TYPE before its samples; a family's samples contiguous; no duplicate series.
fn parse(text: &str) -> Result<Exposition, String> {
    if !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    let mut ex = Exposition::default();
    let mut helped = HashSet::new();
    let mut finished_families = HashSet::new();
    let mut current: Option<String> = None;
    let mut series = HashSet::new();
    for (n, line) in text[..text.len() - 1].split('\n').enumerate() {
        let n = n + 1;
        let fail = |m: String| format!("line {n}: {m}: `{line}`");
        if line.is_empty() {
            return Err(fail("empty line".into()));
        }
        if let Some(rest) = line.strip_prefix('#') {
            let words: Vec<&str> = rest.splitn(4, ' ').collect();
            match words.as_slice() {
                ["", "HELP", name, ..]
                    if !is_metric_name(name) || !helped.insert(name.to_string()) =>
                {
                    return Err(fail("bad or repeated HELP".into()));
                }
                ["", "TYPE", name, kind] => {
                    if !is_metric_name(name)
                        || !matches!(
                            *kind,
                            "counter" | "gauge" | "histogram" | "summary" | "untyped"
                        )
                    {
                        return Err(fail("bad TYPE".into()));
                    }
                    if ex
                        .types
                        .insert(name.to_string(), kind.to_string())
                        .is_some()
                    {
                        return Err(fail("repeated TYPE".into()));
                    }
                    if ex
                        .samples
                        .iter()
                        .any(|s| family_of(&s.name, &ex.types) == Some(name))
                    {
                        return Err(fail("TYPE after the family's samples".into()));
                    }
                }
                _ => {} // a comment
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| fail("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(fail("bad metric name".into()));
        }
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(after) => parse_labels(after).map_err(&fail)?,
            None => (BTreeMap::new(), &line[name_end..]),
        };
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| fail("expected a space before the value".into()))?;
        let mut parts = rest.split(' ');
        let value = parse_value(parts.next().unwrap_or("")).map_err(&fail)?;
        if let Some(ts) = parts.next() {
            ts.parse::<i64>()
                .map_err(|_| fail(format!("bad timestamp `{ts}`")))?;
        }
        if parts.next().is_some() {
            return Err(fail("trailing fields".into()));
        }
        let family = family_of(name, &ex.types)
            .ok_or_else(|| fail("sample without a preceding TYPE".into()))?
            .to_string();
        if current.as_deref() != Some(&family) {
            if let Some(prev) = current.replace(family.clone()) {
                finished_families.insert(prev);
            }
            if finished_families.contains(&family) {
                return Err(fail("family's samples are not contiguous".into()));
            }
        }
        if !series.insert((name.to_string(), labels.clone())) {
            return Err(fail("duplicate series".into()));
        }
        ex.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(ex)
}

/// Checks every histogram: buckets cumulative and non-decreasing, ending at `+Inf`, whose
/// count is `_count`; returns each histogram's `_count`.
fn check_histograms(ex: &Exposition) -> HashMap<String, f64> {
    let mut counts = HashMap::new();
    for (family, kind) in &ex.types {
        if kind != "histogram" {
            continue;
        }
        let mut buckets: Vec<(f64, f64)> = ex
            .find(&format!("{family}_bucket"), &[])
            .iter()
            .map(|s| {
                assert_eq!(s.labels.len(), 1, "only `le` on {family}: {s:?}");
                (
                    parse_value(&s.labels["le"]).expect("le is a float"),
                    s.value,
                )
            })
            .collect();
        assert!(!buckets.is_empty(), "{family} has buckets");
        let sorted = buckets.windows(2).all(|w| w[0].0 < w[1].0);
        assert!(sorted, "{family}: buckets in increasing `le` order");
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        for w in buckets.windows(2) {
            assert!(w[0].1 <= w[1].1, "{family}: cumulative counts {buckets:?}");
        }
        let (last_le, inf_count) = *buckets.last().unwrap();
        assert_eq!(last_le, f64::INFINITY, "{family} ends with +Inf");
        let count = ex.value(&format!("{family}_count"), &[]);
        assert_eq!(count, inf_count, "{family}: _count is the +Inf bucket");
        let sum = ex.value(&format!("{family}_sum"), &[]);
        assert!(sum.is_finite() && sum >= 0.0, "{family}_sum {sum}");
        counts.insert(family.clone(), count);
    }
    counts
}

#[test]
fn parser_rejects_what_the_format_forbids() {
    let ok = "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\\\"\\\\\\n\"} 1\n";
    let ex = parse(ok).unwrap();
    assert_eq!(ex.samples[0].labels["k"], "v\"\\\n");
    for bad in [
        "a 1\n",                                                    // no TYPE
        "# TYPE a gauge\na 1",                                      // no final newline
        "# TYPE a gauge\na{k=\"v} 1\n",                             // unterminated
        "# TYPE a gauge\na{k=\"\\t\"} 1\n",                         // bad escape
        "# TYPE a gauge\na{1k=\"v\"} 1\n",                          // bad label name
        "# TYPE a gauge\na inf\n",                                  // bad float spelling
        "# TYPE a gauge\na 1\na 2\n",                               // duplicate series
        "# TYPE a gauge\n# TYPE b gauge\na 1\nb 1\na{x=\"1\"} 1\n", // not contiguous
        "# TYPE a gauge\n# TYPE a gauge\na 1\n",                    // repeated TYPE
        "# TYPE 0a gauge\n",                                        // bad name
        "# TYPE a gauge\n\na 1\n",                                  // empty line
    ] {
        assert!(parse(bad).is_err(), "accepted {bad:?}");
    }
}

// ===== a dispatcher with known traffic =====

/// Holds every ticket until the test completes it.
struct Hold(Arc<Mutex<Vec<Ticket>>>);

impl Backend for Hold {
    type Payload = ();
    fn dispatch(&self, _task: Task, _payload: (), _routes: &RouteOptions, ticket: Ticket) {
        self.0.lock().unwrap().push(ticket);
    }
}

/// A node name that needs every escape.
const ODD_NAME: &str = "l4 \"b\"\\2\nx";
const CHAT_TASKS: u64 = 40;
const VISION_TASKS: u64 = 5;

/// Routes tasks on a two-node fleet (one named with every character that needs escaping)
/// until it is saturated, plus tasks no node can serve; finishes the tickets with mixed
/// outcomes (one abandoned) and refuses one submit. Returns the metrics and the exposition.
fn traffic() -> (RoutingMetrics, String) {
    let router = Router::builder()
        .capabilities(["chat", "vision"])
        .node(
            NodeSpec::new("h100-a")
                .capabilities(["chat"])
                .max_concurrency(3),
        )
        .node(
            NodeSpec::new(ODD_NAME)
                .capabilities(["chat"])
                .max_concurrency(2),
        )
        .build()
        .unwrap();
    let chat = router.resolve(&["chat"]).unwrap();
    let vision = router.resolve(&["vision"]).unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let d = Dispatcher::builder(router)
        .workers(2)
        .control_interval(None)
        .build(Hold(Arc::clone(&held)))
        .unwrap();
    for id in 0..CHAT_TASKS {
        let p = Priority::ALL[id as usize % 4];
        d.submit(Task::new(id, 100, 10).require(chat).priority(p), ())
            .unwrap();
    }
    for id in CHAT_TASKS..CHAT_TASKS + VISION_TASKS {
        d.submit(Task::new(id, 100, 10).require(vision), ())
            .unwrap();
    }
    d.shutdown();
    assert!(d.submit(Task::new(99, 1, 1), ()).is_err());
    let tickets = std::mem::take(&mut *held.lock().unwrap());
    assert_eq!(
        tickets.len(),
        5,
        "capacity 3 + 2; nothing completes meanwhile"
    );
    let mut it = tickets.into_iter();
    for outcome in [
        Outcome::Success,
        Outcome::RateLimited,
        Outcome::ServerError,
        Outcome::Success,
    ] {
        it.next().unwrap().complete(Completion {
            outcome,
            latency_ms: 12.0,
            output_tokens: 10,
        });
    }
    drop(it); // the last ticket: abandoned
    let m = d.metrics();
    let h = d.decision_histogram();
    assert_eq!(h.len(), m.decision_latency.count);
    let text = render(&m, Some(&h));
    (m, text)
}

/// Everything the exposition says agrees with `m`.
fn check_against(ex: &Exposition, m: &RoutingMetrics) {
    assert_eq!(
        ex.types["switchyard_decision_latency_seconds"], "histogram",
        "{:?}",
        ex.types
    );
    let counts = check_histograms(ex);
    // One decision per routing attempt: every task once, and a task waiting for capacity
    // again on each retry.
    assert_eq!(
        counts["switchyard_decision_latency_seconds"],
        m.decision_latency.count as f64
    );
    let tasks = CHAT_TASKS + VISION_TASKS;
    assert_eq!(m.dispatched + m.no_route_total(), tasks);
    assert!(
        m.decision_latency.count >= tasks,
        "{:?}",
        m.decision_latency
    );
    let les: Vec<f64> = ex
        .find("switchyard_decision_latency_seconds_bucket", &[])
        .iter()
        .map(|s| parse_value(&s.labels["le"]).unwrap())
        .collect();
    let mut want: Vec<f64> = DECISION_BUCKETS_NS
        .iter()
        .map(|&ns| ns as f64 / 1e9)
        .collect();
    want.push(f64::INFINITY);
    assert_eq!(les, want);

    // Every family is typed as documented.
    for (name, kind) in [
        ("switchyard_dispatched_total", "counter"),
        ("switchyard_tasks_total", "counter"),
        ("switchyard_no_route_total", "counter"),
        ("switchyard_shed_total", "counter"),
        ("switchyard_submit_refused_total", "counter"),
        ("switchyard_in_flight", "gauge"),
        ("switchyard_queued", "gauge"),
        ("switchyard_waiting", "gauge"),
        ("switchyard_balance_deviation", "gauge"),
        ("switchyard_snapshot_epoch", "gauge"),
        ("switchyard_node_in_flight", "gauge"),
        ("switchyard_node_tokens_in_flight", "gauge"),
        ("switchyard_node_utilization", "gauge"),
        ("switchyard_node_latency_ewma_seconds", "gauge"),
        ("switchyard_node_draining", "gauge"),
        ("switchyard_node_leases_total", "counter"),
        ("switchyard_node_tasks_total", "counter"),
    ] {
        assert_eq!(ex.types.get(name).map(String::as_str), Some(kind), "{name}");
    }

    // Counters match the metrics.
    let v = |name: &str, labels: &[(&str, &str)]| ex.value(name, labels);
    assert_eq!(v("switchyard_dispatched_total", &[]), m.dispatched as f64);
    for o in Outcome::ALL {
        assert_eq!(
            v("switchyard_tasks_total", &[("outcome", o.name())]),
            m.outcome(o) as f64,
            "{o:?}"
        );
    }
    assert_eq!(ex.find("switchyard_tasks_total", &[]).len(), 6);
    for e in RouteError::ALL {
        let want = m.no_route.iter().find(|(n, _)| *n == e.name()).unwrap().1;
        assert_eq!(
            v("switchyard_no_route_total", &[("reason", e.name())]),
            want as f64
        );
    }
    for p in Priority::ALL {
        assert_eq!(
            v("switchyard_shed_total", &[("class", p.name())]),
            m.shed_by_class[p] as f64
        );
    }
    assert_eq!(v("switchyard_submit_refused_total", &[]), m.refused as f64);
    assert_eq!(v("switchyard_in_flight", &[]), m.in_flight as f64);
    assert_eq!(v("switchyard_queued", &[]), m.queued as f64);
    assert_eq!(v("switchyard_waiting", &[]), m.waiting as f64);
    assert_eq!(v("switchyard_balance_deviation", &[]), m.balance_deviation);
    assert_eq!(v("switchyard_snapshot_epoch", &[]), m.epoch as f64);

    // The traffic itself: 5 dispatched, 35 saturated (shed evenly by class), 5 incapable.
    assert_eq!(m.dispatched, 5);
    assert_eq!(
        v("switchyard_no_route_total", &[("reason", "saturated")]),
        35.0
    );
    assert_eq!(
        v(
            "switchyard_no_route_total",
            &[("reason", "no_capable_route")]
        ),
        5.0
    );
    let shed: f64 = ex
        .find("switchyard_shed_total", &[])
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(shed, 35.0);
    assert_eq!(v("switchyard_tasks_total", &[("outcome", "success")]), 2.0);
    assert_eq!(
        v("switchyard_tasks_total", &[("outcome", "abandoned")]),
        1.0
    );
    assert_eq!(v("switchyard_submit_refused_total", &[]), 1.0);
    assert_eq!(v("switchyard_in_flight", &[]), 0.0);

    // Per node: the odd name survives escaping; per-node figures match.
    assert_eq!(m.nodes.len(), 2);
    for n in &m.nodes {
        let node = [("node", n.name.as_str())];
        assert_eq!(v("switchyard_node_in_flight", &node), n.in_flight as f64);
        assert_eq!(v("switchyard_node_utilization", &node), n.utilization);
        assert_eq!(
            v("switchyard_node_latency_ewma_seconds", &node),
            n.latency_ewma_ms / 1e3
        );
        assert_eq!(v("switchyard_node_draining", &node), 0.0);
        assert_eq!(v("switchyard_node_leases_total", &node), n.leases as f64);
        for o in Outcome::ALL {
            assert_eq!(
                v(
                    "switchyard_node_tasks_total",
                    &[("node", n.name.as_str()), ("outcome", o.name())]
                ),
                n.outcomes[o] as f64
            );
        }
    }
    assert_eq!(
        ex.find("switchyard_node_in_flight", &[("node", ODD_NAME)])
            .len(),
        1
    );
    let per_node_total: f64 = ex
        .find("switchyard_node_tasks_total", &[])
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(per_node_total, 5.0);
}

#[test]
fn render_of_a_real_dispatcher_parses_and_matches_its_metrics() {
    let (m, text) = traffic();
    let ex = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    check_against(&ex, &m);
    // The escaped name is on the wire as the format spells it.
    assert!(text.contains("node=\"l4 \\\"b\\\"\\\\2\\nx\""), "{text}");
}

#[test]
fn without_a_histogram_the_latency_is_a_summary() {
    let (m, _) = traffic();
    let text = render(&m, None);
    let ex = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(ex.types["switchyard_decision_latency_seconds"], "summary");
    assert_eq!(
        ex.value("switchyard_decision_latency_seconds_count", &[]),
        m.decision_latency.count as f64
    );
    let q = |q: &str| ex.value("switchyard_decision_latency_seconds", &[("quantile", q)]);
    assert_eq!(q("0.5"), m.decision_latency.p50_ns as f64 / 1e9);
    assert!(q("0.5") <= q("0.99") && q("0.99") <= q("1"));
    // An empty report parses too.
    let empty = render(&RoutingMetrics::default(), None);
    parse(&empty).unwrap_or_else(|e| panic!("{e}\n{empty}"));
}

// ===== over HTTP =====

/// Serves one request on `listener` with `body`, as a `/metrics` endpoint does.
fn serve_once(listener: TcpListener, body: String) -> std::io::Result<String> {
    let (mut stream, _) = listener.accept()?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 || request.len() > 16 * 1024 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let request = String::from_utf8_lossy(&request).into_owned();
    let (status, body) = if request.starts_with("GET /metrics HTTP/1.1\r\n") {
        ("200 OK", body)
    } else {
        ("404 Not Found", String::from("not found\n"))
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()?;
    Ok(request)
}

#[test]
fn scrape_over_http() {
    let (m, text) = traffic();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || serve_once(listener, text));

    let mut client = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    client.read_to_end(&mut response).unwrap();
    let request = server.join().unwrap().unwrap();
    assert!(request.contains("Host: 127.0.0.1\r\n"), "{request}");

    let response = String::from_utf8(response).expect("the response is UTF-8");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("headers end with an empty line");
    let mut lines = head.split("\r\n");
    assert_eq!(lines.next(), Some("HTTP/1.1 200 OK"));
    let headers: HashMap<String, String> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').expect("a header line");
            (k.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    assert!(
        headers["content-type"].starts_with("text/plain; version=0.0.4"),
        "{headers:?}"
    );
    assert_eq!(headers["content-length"], body.len().to_string());
    let ex = parse(body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    check_against(&ex, &m);
}

/// Completes every ticket at once.
struct Echo;

impl Backend for Echo {
    type Payload = ();
    fn dispatch(&self, _task: Task, _payload: (), _routes: &RouteOptions, ticket: Ticket) {
        ticket.complete(Completion::success(1.0, 1));
    }
}

#[test]
fn without_waiting_there_is_one_decision_per_task() {
    let router = Router::builder()
        .node(NodeSpec::new("a").max_concurrency(64))
        .build()
        .unwrap();
    let d = Dispatcher::builder(router).workers(2).build(Echo).unwrap();
    for id in 0..200 {
        d.submit(Task::new(id, 10, 1), ()).unwrap();
    }
    d.shutdown();
    let text = render(&d.metrics(), Some(&d.decision_histogram()));
    let ex = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(
        check_histograms(&ex)["switchyard_decision_latency_seconds"],
        200.0
    );
    assert_eq!(
        ex.value("switchyard_tasks_total", &[("outcome", "success")]),
        200.0
    );
}
