//! stream-server stand-in: health at /api/v1/health and GET /hls/<track>/<segment> answering
//! which instance served it. Standard library only (builds offline with Debian's rustc 1.63),
//! logs to stdout, writes nothing to disk, so it runs under the hardened systemd unit of the
//! binary_service role. One thread per connection, capped; HTTP/1.1 keep-alive; SIGTERM drains.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::raw::{c_char, c_int, c_short, c_ulong};
use std::os::unix::io::AsRawFd;
use std::process;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

// Baked in at compile time by scripts/build-demo-stream (rustc records these variables, so
// cargo rebuilds when they change): a deploy pushes one self-describing file.
const VERSION: &str = match option_env!("VEZA_VERSION") {
    Some(version) => version,
    None => "dev",
};
const BAKED_BROKEN: Option<&str> = option_env!("VEZA_BROKEN");
const BAKED_CRASH_AFTER: Option<&str> = option_env!("VEZA_CRASH_AFTER");
const BAKED_SLOW_MS: Option<&str> = option_env!("VEZA_SLOW_MS");
const BAKED_ERROR_RATE: Option<&str> = option_env!("VEZA_ERROR_RATE");

const SERVICE: &str = "stream-server";
const DEFAULT_PORT: u16 = 8082;
const HEALTH_PATH: &str = "/api/v1/health";

/// How often blocked waits look at the stop flag (and so how long a drain takes at least).
const TICK: Duration = Duration::from_millis(250);
/// systemd sends SIGKILL after TimeoutStopSec=15; finish well before that.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// A keep-alive connection with no request for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Time a client has to send the rest of a request once it started one (and to read our answer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: u64 = 1 << 20;
/// Beyond this many open connections new ones get a 503 instead of a thread.
const MAX_CONNECTIONS: usize = 1024;
const CONNECTION_STACK: usize = 256 * 1024;

/// Set by SIGTERM/SIGINT; every loop that can wait checks it at least once per TICK.
static STOP: AtomicBool = AtomicBool::new(false);

/// The few libc calls std does not wrap (std links libc anyway, so no crate is needed).
mod libc {
    use std::os::raw::{c_char, c_int, c_short, c_ulong};

    pub const SIGINT: c_int = 2;
    pub const SIGTERM: c_int = 15;
    pub const POLLIN: c_short = 0x1;

    #[repr(C)]
    pub struct PollFd {
        pub fd: c_int,
        pub events: c_short,
        pub revents: c_short,
    }

    extern "C" {
        pub fn signal(signum: c_int, handler: extern "C" fn(c_int)) -> usize;
        pub fn poll(fds: *mut PollFd, count: c_ulong, timeout_ms: c_int) -> c_int;
        pub fn gethostname(name: *mut c_char, length: usize) -> c_int;
    }
}

/// The baked behaviour of this build.
struct Variant {
    broken: bool,
    crash_after: Option<Duration>,
    slow: Duration,
    error_rate: f64,
}

fn baked_variant() -> Result<Variant, String> {
    let crash_after = baked_number("crash-after", BAKED_CRASH_AFTER)?;
    let slow_ms = baked_number("slow-ms", BAKED_SLOW_MS)?;
    let error_rate = baked_fraction("error-rate", BAKED_ERROR_RATE)?;
    Ok(Variant {
        broken: BAKED_BROKEN == Some("1"),
        crash_after: if crash_after > 0 { Some(Duration::from_secs(crash_after)) } else { None },
        slow: Duration::from_millis(slow_ms),
        error_rate,
    })
}

/// A baked share between 0 and 1; absent or empty means 0.
fn baked_fraction(name: &str, text: Option<&str>) -> Result<f64, String> {
    match text {
        None | Some("") => Ok(0.0),
        Some(text) => match text.parse::<f64>() {
            Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
            _ => Err(format!("{}={:?} is not a fraction between 0 and 1", name, text)),
        },
    }
}

/// A baked count; absent or empty means 0.
fn baked_number(name: &str, text: Option<&str>) -> Result<u64, String> {
    match text {
        None | Some("") => Ok(0),
        Some(text) => text.parse().map_err(|_| format!("{}={:?} is not a whole number", name, text)),
    }
}

/// What every connection thread shares.
struct Shared {
    instance: String,
    slow: Duration,
    error_rate: f64,
    /// Requests counted for the baked error rate.
    served: AtomicUsize,
    open_connections: AtomicUsize,
}

impl Shared {
    /// Whether this request gets the baked 500: exactly ``error_rate`` of the requests outside the
    /// health path (the n-th fails when floor(n * rate) moves), so health checks and the deploy's
    /// gates stay green, as a subtly bad release would keep them.
    fn fails_this_one(&self, path: &str) -> bool {
        if self.error_rate <= 0.0 || path == HEALTH_PATH {
            return false;
        }
        let n = (self.served.fetch_add(1, Ordering::SeqCst) + 1) as f64;
        (n * self.error_rate).floor() > ((n - 1.0) * self.error_rate).floor()
    }

    fn log(&self, message: &str) {
        // A closed stdout must not take the server down: the line is lost, nothing else.
        let _ = writeln!(io::stdout().lock(), "{}[{}]: {}", SERVICE, self.instance, message);
    }
}

/// One counted connection; dropping it (even on a thread's panic) gives the slot back.
struct ConnectionSlot(Arc<Shared>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::SeqCst);
    }
}

fn main() {
    process::exit(run());
}

fn run() -> i32 {
    let started = Instant::now();
    let variant = match baked_variant() {
        Ok(variant) => variant,
        Err(message) => {
            eprintln!("{} {}: bad build: {}", SERVICE, VERSION, message);
            return 2;
        }
    };
    if variant.broken {
        // Fail at start so the systemd unit fails and a deploy must notice.
        eprintln!("{} {}: this build is broken on purpose (--broken); refusing to start", SERVICE, VERSION);
        return 1;
    }
    let port = match listen_port() {
        Ok(port) => port,
        Err(message) => {
            eprintln!("{}: {}", SERVICE, message);
            return 2;
        }
    };
    let listener = match TcpListener::bind(("0.0.0.0", port)).and_then(|l| l.set_nonblocking(true).map(|_| l)) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("{}: cannot listen on 0.0.0.0:{}: {}", SERVICE, port, error);
            return 1;
        }
    };
    let shared = Arc::new(Shared {
        instance: instance_name(),
        slow: variant.slow,
        error_rate: variant.error_rate,
        served: AtomicUsize::new(0),
        open_connections: AtomicUsize::new(0),
    });
    install_stop_handlers();
    shared.log(&format!("version {} listening on 0.0.0.0:{}", VERSION, port));
    let crash_at = variant.crash_after.map(|after| started + after);
    accept_until_stopped(&listener, &shared, crash_at);
    drop(listener); // refuse new connections from here on
    shared.log("draining");
    if !drain(&shared) {
        shared.log("drain cut short: connections still open");
    }
    shared.log("stopped");
    0
}

fn listen_port() -> Result<u16, String> {
    match std::env::var("LISTEN_PORT") {
        Ok(text) if !text.is_empty() => {
            text.parse().map_err(|_| format!("LISTEN_PORT={:?} is not a port number", text))
        }
        _ => Ok(DEFAULT_PORT),
    }
}

fn instance_name() -> String {
    match std::env::var("INSTANCE_NAME") {
        Ok(name) if !name.is_empty() => name,
        _ => host_name(),
    }
}

/// gethostname(2), since /proc/sys is hidden by the unit's ProcSubset=pid.
fn host_name() -> String {
    let mut buffer = [0 as c_char; 256];
    // SAFETY: the length passed is the buffer's; glibc NUL-terminates within it.
    if unsafe { libc::gethostname(buffer.as_mut_ptr(), buffer.len() - 1) } != 0 {
        return "unknown".to_string();
    }
    let bytes: Vec<u8> = buffer.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

extern "C" fn request_stop(_signal: c_int) {
    STOP.store(true, Ordering::SeqCst); // an atomic store is async-signal-safe
}

fn install_stop_handlers() {
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, request_stop);
        libc::signal(libc::SIGINT, request_stop);
    }
}

fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Accepts connections until SIGTERM/SIGINT (the loop's only way out besides the baked crash).
fn accept_until_stopped(listener: &TcpListener, shared: &Arc<Shared>, crash_at: Option<Instant>) {
    while !stopping() {
        if let Some(at) = crash_at {
            if Instant::now() >= at {
                eprintln!(
                    "{} {}: crashing on purpose (--crash-after {})",
                    SERVICE,
                    VERSION,
                    BAKED_CRASH_AFTER.unwrap_or("")
                );
                process::exit(1);
            }
        }
        if !wait_readable(listener, TICK) {
            continue;
        }
        match listener.accept() {
            Ok((stream, peer)) => start_connection(stream, peer, shared),
            Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(error) => {
                // Out of descriptors, say: back off rather than spin on the same error.
                shared.log(&format!("accept failed: {}", error));
                thread::sleep(TICK);
            }
        }
    }
}

/// Whether a connection is waiting, after at most `timeout`.
fn wait_readable(listener: &TcpListener, timeout: Duration) -> bool {
    let mut watched = libc::PollFd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, counted as one.
    let ready = unsafe { libc::poll(&mut watched, 1 as c_ulong, timeout.as_millis() as c_int) };
    ready > 0 && watched.revents & libc::POLLIN as c_short != 0
}

fn start_connection(stream: TcpStream, peer: SocketAddr, shared: &Arc<Shared>) {
    if shared.open_connections.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
        refuse_busy(stream, peer, shared);
        return;
    }
    shared.open_connections.fetch_add(1, Ordering::SeqCst);
    let slot = ConnectionSlot(Arc::clone(shared));
    let spawned = thread::Builder::new().stack_size(CONNECTION_STACK).spawn(move || {
        serve_connection(stream, peer, &slot.0);
        drop(slot);
    });
    if let Err(error) = spawned {
        // The closure, its stream and its slot were dropped with the error.
        shared.log(&format!("{} refused: cannot start a thread: {}", peer, error));
    }
}

fn refuse_busy(mut stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    // Non-blocking, so a client that reads nothing cannot stall the accept loop.
    let _ = stream.set_nonblocking(true);
    let busy = Response::text(503, "busy\n");
    let _ = write_response(&mut stream, &busy, CLOSE, false);
    shared.log(&format!("{} refused: {} connections open", peer, MAX_CONNECTIONS));
}

/// Waits up to DRAIN_TIMEOUT for open connections to finish; true if they all did.
fn drain(shared: &Shared) -> bool {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while shared.open_connections.load(Ordering::SeqCst) > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Serves one request per turn; ends when the client closes or asks to, idles too long,
/// sends something we refuse, or the server stops.
fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    let writer = stream
        .set_nonblocking(false)
        .and_then(|_| stream.set_write_timeout(Some(REQUEST_TIMEOUT)))
        .and_then(|_| stream.try_clone());
    let mut writer = match writer {
        Ok(writer) => writer,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    while wait_for_request(&mut reader) {
        // An error means a timeout or a client gone mid-request: nothing left to answer.
        if !serve_request(&mut reader, &mut writer, peer, shared).unwrap_or(false) {
            return;
        }
    }
}

/// True once a request's first bytes are here; false if the client closed, idled past
/// IDLE_TIMEOUT, or the server is stopping. Wakes every TICK to look at the stop flag.
fn wait_for_request(reader: &mut BufReader<TcpStream>) -> bool {
    if reader.get_ref().set_read_timeout(Some(TICK)).is_err() {
        return false;
    }
    let idle_since = Instant::now();
    loop {
        match reader.fill_buf() {
            Ok(available) => return !available.is_empty(),
            Err(error) if is_timeout(&error) || error.kind() == io::ErrorKind::Interrupted => {
                if stopping() || idle_since.elapsed() >= IDLE_TIMEOUT {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Reads, answers and logs one request; Ok(true) if the connection stays open for another.
fn serve_request(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    peer: SocketAddr,
    shared: &Shared,
) -> io::Result<bool> {
    reader.get_ref().set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let head = match read_head(reader)? {
        Some(head) => head,
        None => return refuse(writer, peer, shared, Response::text(431, "request head too large\n")),
    };
    let request = match Request::parse(&head) {
        Ok(request) => request,
        Err(reason) => return refuse(writer, peer, shared, Response::text(400, reason)),
    };
    match request.body {
        Body::Chunked => {
            return refuse(writer, peer, shared, Response::text(501, "chunked request bodies are not supported\n"))
        }
        Body::Length(length) if length > MAX_BODY => {
            return refuse(writer, peer, shared, Response::text(413, "request body too large\n"))
        }
        Body::Length(length) => discard_body(reader, length)?,
    }
    if !shared.slow.is_zero() {
        thread::sleep(shared.slow);
    }
    let response = route(&request, shared);
    // While stopping, finish this answer but close afterwards, so the drain can end.
    let keep_alive = request.keep_alive && !stopping();
    let connection = match (keep_alive, request.version.as_str()) {
        (false, _) => CLOSE,
        (true, "HTTP/1.0") => KEEP_ALIVE_1_0, // HTTP/1.0 closes unless told otherwise
        (true, _) => KEEP_ALIVE,
    };
    write_response(writer, &response, connection, request.method == "HEAD")?;
    shared.log(&format!("{} \"{} {} {}\" {}", peer, request.method, request.target, request.version, response.status));
    Ok(keep_alive)
}

/// Answers a request we will not serve, then closes the connection.
fn refuse(writer: &mut TcpStream, peer: SocketAddr, shared: &Shared, response: Response) -> io::Result<bool> {
    write_response(writer, &response, CLOSE, false)?;
    shared.log(&format!("{} refused request: {}", peer, response.status));
    Ok(false)
}

/// The request head up to its blank line; None if it grows past MAX_HEAD.
fn read_head(reader: &mut BufReader<TcpStream>) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    while head.len() <= MAX_HEAD {
        let available = match reader.fill_buf() {
            Ok(available) => available,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if available.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let (taken, complete) = take_through_blank_line(&mut head, available);
        reader.consume(taken);
        if complete {
            return Ok(Some(head));
        }
    }
    Ok(None)
}

/// Moves bytes into `head` up to and including the blank line that ends it (the rest may be
/// the next pipelined request); returns how many bytes it took and whether the head is whole.
fn take_through_blank_line(head: &mut Vec<u8>, available: &[u8]) -> (usize, bool) {
    for (index, &byte) in available.iter().enumerate() {
        head.push(byte);
        if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\n") {
            return (index + 1, true);
        }
    }
    (available.len(), false)
}

fn discard_body(reader: &mut BufReader<TcpStream>, length: u64) -> io::Result<()> {
    let discarded = io::copy(&mut reader.by_ref().take(length), &mut io::sink())?;
    if discarded < length {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

enum Body {
    Length(u64),
    Chunked,
}

struct Request {
    method: String,
    target: String,
    version: String,
    keep_alive: bool,
    body: Body,
}

impl Request {
    fn parse(head: &[u8]) -> Result<Request, &'static str> {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split('\n').map(|line| line.trim_end_matches('\r'));
        let mut request_line = lines.next().unwrap_or("").split(' ');
        let (method, target, version) =
            match (request_line.next(), request_line.next(), request_line.next(), request_line.next()) {
                (Some(method), Some(target), Some(version), None)
                    if !method.is_empty()
                        && target.starts_with('/')
                        && (version == "HTTP/1.1" || version == "HTTP/1.0") =>
                {
                    (method, target, version)
                }
                _ => return Err("malformed request line\n"),
            };
        let mut connection = String::new();
        let mut body = Body::Length(0);
        for line in lines.filter(|line| !line.is_empty()) {
            let (name, value) = match line.split_once(':') {
                Some((name, value)) => (name.trim().to_ascii_lowercase(), value.trim()),
                None => return Err("malformed header line\n"),
            };
            match name.as_str() {
                "connection" => connection = value.to_ascii_lowercase(),
                "content-length" => body = Body::Length(value.parse().map_err(|_| "bad Content-Length\n")?),
                "transfer-encoding" => body = Body::Chunked,
                _ => {}
            }
        }
        let asks = |token: &str| connection.split(',').any(|t| t.trim() == token);
        Ok(Request {
            method: method.to_string(),
            target: target.to_string(),
            version: version.to_string(),
            keep_alive: if version == "HTTP/1.1" { !asks("close") } else { asks("keep-alive") },
            body,
        })
    }
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response { status, content_type: "text/plain; charset=utf-8", body: body.to_string() }
    }
}

fn route(request: &Request, shared: &Shared) -> Response {
    if request.method != "GET" && request.method != "HEAD" {
        return Response::text(501, "unsupported method\n");
    }
    let path = request.target.split('?').next().unwrap_or("");
    if shared.fails_this_one(path) {
        return Response::text(
            500,
            &format!("{} instance={} version={} failed on purpose (--error-rate)\n", SERVICE, shared.instance, VERSION),
        );
    }
    if path == HEALTH_PATH {
        return Response { status: 200, content_type: "application/json", body: health_json(&shared.instance) };
    }
    match hls_track(path) {
        Some(track) => Response::text(
            200,
            &format!("{} instance={} track={} version={}\n", SERVICE, shared.instance, track, VERSION),
        ),
        None => Response::text(404, "not found\n"),
    }
}

/// The track of /hls/<track>/<anything non-empty>.
fn hls_track(path: &str) -> Option<&str> {
    let mut parts = path.splitn(4, '/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(""), Some("hls"), Some(track), Some(rest)) if !track.is_empty() && !rest.is_empty() => Some(track),
        _ => None,
    }
}

fn health_json(instance: &str) -> String {
    format!(
        "{{\"status\": \"ok\", \"instance\": {}, \"version\": {}, \"service\": {}}}\n",
        json_string(instance),
        json_string(VERSION),
        json_string(SERVICE)
    )
}

fn json_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for character in text.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if (c as u32) < 0x20 => quoted.push_str(&format!("\\u{:04x}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Connection header lines for write_response.
const CLOSE: &str = "Connection: close\r\n";
const KEEP_ALIVE_1_0: &str = "Connection: keep-alive\r\n";
const KEEP_ALIVE: &str = "";

fn write_response(writer: &mut TcpStream, response: &Response, connection: &str, head_only: bool) -> io::Result<()> {
    let mut message = format!(
        "HTTP/1.1 {} {}\r\nServer: veza-demo\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}\r\n",
        response.status,
        reason_phrase(response.status),
        response.content_type,
        response.body.len(),
        connection
    )
    .into_bytes();
    if !head_only {
        message.extend_from_slice(response.body.as_bytes());
    }
    writer.write_all(&message)?;
    writer.flush()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        413 => "Content Too Large",
        500 => "Internal Server Error",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}
