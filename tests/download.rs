//! `data download` against an HTTP server on 127.0.0.1 that serves generated files: a complete
//! download, a connection cut mid-file and its resume, a wrong checksum, an HTTP error, and a
//! Speech Commands archive that does not match the pinned SHA-256. The server stops by itself.

mod common;

use common::{scratch, small_dataset, snn, text};
use md5::{Digest, Md5};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the server answers one path.
#[derive(Clone)]
enum Route {
    /// The bytes, with range requests honoured.
    Serve(Vec<u8>),
    /// The first request gets the full length announced but half the bytes, then a closed
    /// connection; later requests are served as [`Route::Serve`].
    CutOnce(Vec<u8>),
}

/// A one-thread HTTP/1.1 server on 127.0.0.1 that logs each request line with its Range header
/// and stops when dropped or after two minutes.
struct Server {
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    fn start(routes: HashMap<String, Route>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (log, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let (thread_log, thread_stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut routes = routes;
            let deadline = Instant::now() + Duration::from_secs(120);
            while !thread_stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => answer(stream, &mut routes, &thread_log),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server { port, log, stop }
    }

    fn url(&self, folder: &str) -> String {
        format!("http://127.0.0.1:{}/{folder}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn answer(mut stream: TcpStream, routes: &mut HashMap<String, Route>, log: &Mutex<Vec<String>>) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_string();
    let range = head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("range: bytes=").map(|r| r.trim_end_matches('-').to_string()))
        .and_then(|start| start.parse::<usize>().ok());
    log.lock().unwrap().push(format!("GET /{path} range={range:?}"));
    let reply = |stream: &mut TcpStream, status: &str, headers: String, body: &[u8]| {
        let _ = stream.write_all(format!("HTTP/1.1 {status}\r\n{headers}Connection: close\r\n\r\n").as_bytes());
        let _ = stream.write_all(body);
    };
    match routes.get(&path).cloned() {
        None => reply(&mut stream, "404 Not Found", "Content-Length: 0\r\n".into(), b""),
        Some(Route::CutOnce(bytes)) => {
            routes.insert(path, Route::Serve(bytes.clone()));
            reply(&mut stream, "200 OK", format!("Content-Length: {}\r\n", bytes.len()), &bytes[..bytes.len() / 2]);
        }
        Some(Route::Serve(bytes)) => match range {
            Some(start) if start >= bytes.len() => {
                reply(&mut stream, "416 Range Not Satisfiable", "Content-Length: 0\r\n".into(), b"")
            }
            Some(start) => {
                let headers = format!(
                    "Content-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\n",
                    bytes.len() - start,
                    bytes.len() - 1,
                    bytes.len()
                );
                reply(&mut stream, "206 Partial Content", headers, &bytes[start..]);
            }
            None => reply(&mut stream, "200 OK", format!("Content-Length: {}\r\n", bytes.len()), &bytes),
        },
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn download(dataset: &str, out: &Path, base_url: &str) -> std::process::Output {
    snn(&["data", "download", "--dataset", dataset, "--out", out.to_str().unwrap(), "--base-url", base_url])
}

#[test]
fn spike_datasets_download_resume_and_refuse_bad_checksums() {
    let dir = scratch("download");
    let data = small_dataset(&dir, &["--classes", "4", "--train", "40", "--test", "20"]);
    let (train, test) = (std::fs::read(data.join("shd_train.h5")).unwrap(), std::fs::read(data.join("shd_test.h5")).unwrap());
    let (train_gz, test_gz) = (gzip(&train), gzip(&test));
    let list = format!("{}  shd_train.h5.gz\n{} *shd_test.h5.gz\n", md5_hex(&train_gz), md5_hex(&test_gz));
    let wrong = format!("{}  shd_train.h5.gz\n{}  shd_test.h5.gz\n", md5_hex(&train_gz), md5_hex(b"other"));
    let routes = HashMap::from([
        ("good/md5sums.txt".to_string(), Route::Serve(list.into_bytes())),
        ("good/shd_train.h5.gz".to_string(), Route::CutOnce(train_gz.clone())),
        ("good/shd_test.h5.gz".to_string(), Route::Serve(test_gz.clone())),
        ("bad/md5sums.txt".to_string(), Route::Serve(wrong.into_bytes())),
        ("bad/shd_test.h5.gz".to_string(), Route::Serve(test_gz)),
    ]);
    let server = Server::start(routes);

    let out = dir.join("shd");
    let cut = download("shd", &out, &server.url("good"));
    assert_eq!(cut.status.code(), Some(1), "{}", text(&cut));
    assert!(text(&cut).contains("stopped") && text(&cut).contains("resume"), "{}", text(&cut));
    assert!(!out.join("shd_train.h5.gz").exists() && !out.join("shd_train.h5").exists(), "no file under a final name");
    assert!(out.join(".shd_train.h5.gz.part").exists(), "the part is kept for the resume");

    let resumed = download("shd", &out, &server.url("good"));
    assert!(resumed.status.success(), "{}", text(&resumed));
    let half = train_gz.len() / 2;
    assert!(server.requests().contains(&format!("GET /good/shd_train.h5.gz range=Some({half})")), "{:?}", server.requests());
    assert_eq!(std::fs::read(out.join("shd_train.h5")).unwrap(), train);
    assert_eq!(std::fs::read(out.join("shd_test.h5")).unwrap(), test);
    let info = snn(&["data", "info", "--dataset", "shd", "--data", out.to_str().unwrap()]);
    assert!(info.status.success(), "{}", text(&info));

    let before = server.requests().len();
    let again = download("shd", &out, &server.url("good"));
    assert!(again.status.success() && text(&again).contains("already there"), "{}", text(&again));
    assert_eq!(server.requests().len(), before, "nothing fetched when everything is there");

    let other = dir.join("shd-bad");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::copy(out.join("shd_train.h5"), other.join("shd_train.h5")).unwrap();
    let mismatch = download("shd", &other, &server.url("bad"));
    let message = text(&mismatch);
    assert_eq!(mismatch.status.code(), Some(1), "{message}");
    assert!(message.contains("shd_test.h5.gz") && message.contains("checksum mismatch"), "{message}");
    assert!(!other.join("shd_test.h5.gz").exists() && !other.join(".shd_test.h5.gz.part").exists());
    assert_eq!(std::fs::read(other.join("shd_train.h5")).unwrap(), train, "the earlier file is untouched");

    let missing = download("ssc", &dir.join("ssc"), &server.url("nowhere"));
    assert!(!missing.status.success() && text(&missing).contains("HTTP 404"), "{}", text(&missing));
}

#[test]
fn speech_commands_must_match_the_pinned_sha256() {
    let dir = scratch("download-gsc");
    let archive = gzip(b"not the Speech Commands archive");
    let server = Server::start(HashMap::from([("gsc/speech_commands_v0.02.tar.gz".to_string(), Route::Serve(archive))]));
    let out = dir.join("gsc");
    let refused = download("gsc", &out, &server.url("gsc"));
    let message = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{message}");
    assert!(message.contains("SHA-256 af14739e") && message.contains("checksum mismatch"), "{message}");
    assert!(!out.join("SpeechCommands").exists() && !out.join("speech_commands_v0.02.tar.gz").exists());
}
