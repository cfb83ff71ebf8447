//! `loadgen`: a closed-loop HTTP/1.1 load generator that times a streamed
//! answer's first chunk, for `scripts/load`.
//!
//! wrk times whole responses only; a gateway's streaming quality is the time
//! to the first chunk under concurrency. Each of `--connections` keep-alive
//! connections sends the load test's chat request, notes when the response
//! head and the first non-empty body frame arrive, drains the body, and
//! sends the next, until `--seconds` or `--requests` run out. One thread (as
//! `wrk -t1`), so it can share a core with the mock upstream.
//!
//! Prints one line for `scripts/load`:
//! `LOADRESULT requests=N duration_us=N p50_us=N p99_us=N ttfc_p50_us=N
//! ttfc_p99_us=N errors=N status=N`, latencies in microseconds.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A response (or its next chunk) later than this counts as an error, so
/// every run ends.
const STALL: Duration = Duration::from_secs(10);

struct Args {
    url: String,
    model: String,
    stream: bool,
    connections: usize,
    seconds: u64,
    requests: u64,
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "loadgen: {problem}\nusage: loadgen --url http://HOST:PORT/PATH [--model NAME] \
         [--stream] [--connections N] [--seconds N] [--requests N]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        url: String::new(),
        model: "load".into(),
        stream: false,
        connections: 32,
        seconds: 10,
        requests: 10_000_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .unwrap_or_else(|| usage(&format!("{name} needs a value")))
        };
        let number = |name: &str, v: String| -> u64 {
            v.parse().ok().filter(|n| *n > 0).unwrap_or_else(|| {
                usage(&format!(
                    "{name} must be a positive whole number, got '{v}'"
                ))
            })
        };
        match flag.as_str() {
            "--url" => args.url = value("--url"),
            "--model" => args.model = value("--model"),
            "--stream" => args.stream = true,
            "--connections" => {
                args.connections = number("--connections", value("--connections")) as usize
            }
            "--seconds" => args.seconds = number("--seconds", value("--seconds")),
            "--requests" => args.requests = number("--requests", value("--requests")),
            other => usage(&format!("unknown argument '{other}'")),
        }
    }
    if args.url.is_empty() {
        usage("--url is required");
    }
    args
}

/// The load test's chat request (the same body as scripts/load.d/chat.lua).
fn body(model: &str, stream: bool) -> Bytes {
    let mut body = format!(
        "{{\"model\":\"{model}\",\"messages\":[\
         {{\"role\":\"system\",\"content\":\"You are a helpful assistant.\"}},\
         {{\"role\":\"user\",\"content\":\"What is the capital of France? Answer in one sentence.\"}}\
         ],\"max_tokens\":64,\"temperature\":0.2"
    );
    if stream {
        body.push_str(",\"stream\":true");
    }
    body.push('}');
    Bytes::from(body)
}

#[derive(Default)]
struct Tally {
    latencies: Vec<u32>,
    first_chunks: Vec<u32>,
    errors: u64,
    status: u64,
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

/// One connection's loop: returns what it measured.
async fn connection(
    authority: String,
    path: String,
    body: Bytes,
    until: Instant,
    budget: std::rc::Rc<std::cell::Cell<u64>>,
) -> Tally {
    let mut tally = Tally::default();
    'connect: while Instant::now() < until && budget.get() > 0 {
        let Ok(stream) = TcpStream::connect(&authority).await else {
            tally.errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            tally.errors += 1;
            continue;
        };
        tokio::task::spawn_local(conn);
        while Instant::now() < until && budget.get() > 0 {
            budget.set(budget.get() - 1);
            let request = Request::post(&path)
                .header("host", &authority)
                .header("content-type", "application/json")
                .body(Full::new(body.clone()))
                .expect("a valid request");
            let start = Instant::now();
            let Ok(Ok(response)) = tokio::time::timeout(STALL, sender.send_request(request)).await
            else {
                tally.errors += 1;
                continue 'connect;
            };
            if response.status().as_u16() >= 400 {
                tally.status += 1;
            }
            let mut body = response.into_body();
            let mut first = None;
            loop {
                match tokio::time::timeout(STALL, body.frame()).await {
                    Ok(Some(Ok(frame))) => {
                        if first.is_none() && frame.data_ref().is_some_and(|d| !d.is_empty()) {
                            first = Some(start.elapsed());
                        }
                    }
                    Ok(Some(Err(_))) | Err(_) => {
                        tally.errors += 1;
                        continue 'connect;
                    }
                    Ok(None) => break,
                }
            }
            tally.latencies.push(micros(start.elapsed()));
            tally
                .first_chunks
                .push(micros(first.unwrap_or_else(|| start.elapsed())));
        }
        return tally;
    }
    tally
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let args = parse_args();
    let rest = args
        .url
        .strip_prefix("http://")
        .unwrap_or_else(|| usage("--url must start with http://"));
    let (authority, path) = match rest.find('/') {
        Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
        None => (rest.to_string(), "/".to_string()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let local = tokio::task::LocalSet::new();
    let body = body(&args.model, args.stream);
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let budget = std::rc::Rc::new(std::cell::Cell::new(args.requests));
    let tallies = local.block_on(&runtime, async {
        let tasks: Vec<_> = (0..args.connections)
            .map(|_| {
                tokio::task::spawn_local(connection(
                    authority.clone(),
                    path.clone(),
                    body.clone(),
                    until,
                    budget.clone(),
                ))
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.expect("a connection task"));
        }
        all
    });
    let duration = started.elapsed();
    let mut total = Tally::default();
    for t in tallies {
        total.latencies.extend(t.latencies);
        total.first_chunks.extend(t.first_chunks);
        total.errors += t.errors;
        total.status += t.status;
    }
    total.latencies.sort_unstable();
    total.first_chunks.sort_unstable();
    use std::io::Write;
    let _ = writeln!(
        std::io::stdout().lock(),
        "LOADRESULT requests={} duration_us={} p50_us={} p99_us={} ttfc_p50_us={} ttfc_p99_us={} \
         errors={} status={}",
        total.latencies.len(),
        duration.as_micros(),
        percentile(&total.latencies, 50.0),
        percentile(&total.latencies, 99.0),
        percentile(&total.first_chunks, 50.0),
        percentile(&total.first_chunks, 99.0),
        total.errors,
        total.status,
    );
}
