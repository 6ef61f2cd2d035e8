//! `data download`: each dataset from its official location, verified before it is used.
//!
//! - SHD and SSC: `https://zenkelab.org/datasets/`, the folder that the datasets' page
//!   (<https://zenkelab.org/resources/spiking-heidelberg-datasets-shd/>) names, with its
//!   mirrors. The folder publishes `md5sums.txt`, one MD5 per file; it is fetched first and every
//!   file is checked against it. Files: `{shd,ssc}_{train,test}.h5.gz` and `ssc_valid.h5.gz`,
//!   unpacked to `.h5` beside them.
//! - Speech Commands v0.02: `http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz`,
//!   the location its paper gives (Warden 2018, arXiv:1804.03209). That location publishes no
//!   checksum, so the archive is checked against the SHA-256 that torchaudio pins for this URL
//!   (`torchaudio/datasets/speechcommands.py`, `_CHECKSUMS`). It is unpacked to
//!   `SpeechCommands/speech_commands_v0.02`, the layout torchaudio uses.
//!
//! A file is fetched into `.NAME.part`. A part left by an earlier attempt is resumed with an
//! HTTP range request. The complete part is verified, then renamed to `NAME`; a mismatch deletes
//! it. Unpacking writes under a temporary name and renames, so a final name only ever holds a
//! verified, complete file. A dataset whose unpacked files are all there is not fetched again.

use super::spikes;
use crate::config::Dataset;
use crate::progress::{Progress, Unit};
use anyhow::{bail, ensure, Context, Result};
use md5::Md5;
use sha2::Sha256;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The SHD/SSC folder and its checksum list.
pub const SPIKES_BASE_URL: &str = "https://zenkelab.org/datasets";
const MD5_LIST: &str = "md5sums.txt";
/// The Speech Commands folder and archive, and torchaudio's SHA-256 of that archive.
pub const SPEECH_BASE_URL: &str = "http://download.tensorflow.org/data";
const SPEECH_ARCHIVE: &str = "speech_commands_v0.02.tar.gz";
const SPEECH_SHA256: &str = "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58";
/// Where the Speech Commands archive is unpacked, under the output folder.
const SPEECH_FOLDER: [&str; 2] = ["SpeechCommands", "speech_commands_v0.02"];

/// A checksum a downloaded file must have.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    Md5(String),
    Sha256(String),
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expected::Md5(hex) => write!(f, "MD5 {hex}"),
            Expected::Sha256(hex) => write!(f, "SHA-256 {hex}"),
        }
    }
}

/// One file to fetch: its name, URL and what it unpacks to.
#[derive(Clone, Debug)]
struct Remote {
    name: String,
    url: String,
    unpacked: PathBuf,
}

/// Downloads, verifies and unpacks `dataset` into `out` from `base_url` (default: the official
/// location); prints one line per file.
pub fn download(dataset: Dataset, out: &Path, base_url: Option<&str>, quiet: bool) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let remotes = remotes(dataset, out, base_url);
    let missing: Vec<&Remote> = remotes.iter().filter(|r| !r.unpacked.exists()).collect();
    for remote in remotes.iter().filter(|r| r.unpacked.exists()) {
        println!("{}: already there ({})", remote.name, remote.unpacked.display());
    }
    if missing.is_empty() {
        return Ok(());
    }
    let agent = agent();
    let list_url = format!("{}/{MD5_LIST}", base_url.unwrap_or(SPIKES_BASE_URL).trim_end_matches('/'));
    let md5s = if dataset == Dataset::Gsc { HashMap::new() } else { md5_list(&agent, &list_url)? };
    for remote in missing {
        let expected = match dataset {
            Dataset::Gsc => Expected::Sha256(SPEECH_SHA256.to_string()),
            _ => Expected::Md5(
                md5s.get(&remote.name).with_context(|| format!("{list_url} lists no checksum for {}", remote.name))?.clone(),
            ),
        };
        let archive = out.join(&remote.name);
        fetch_verified(&agent, &remote.url, &archive, &expected, quiet)?;
        unpack(dataset, &archive, out)?;
        println!("{}: verified and unpacked to {}", remote.name, remote.unpacked.display());
    }
    Ok(())
}

/// The files of `dataset`, with their URLs under `base_url` and their unpacked paths in `out`.
fn remotes(dataset: Dataset, out: &Path, base_url: Option<&str>) -> Vec<Remote> {
    let base = |default: &str| base_url.unwrap_or(default).trim_end_matches('/').to_string();
    let splits: &[&str] = match dataset {
        Dataset::Shd => &["shd_train", "shd_test"],
        Dataset::Ssc => &["ssc_train", "ssc_valid", "ssc_test"],
        Dataset::Gsc => {
            let unpacked = SPEECH_FOLDER.iter().fold(out.to_path_buf(), |path, part| path.join(part));
            let url = format!("{}/{SPEECH_ARCHIVE}", base(SPEECH_BASE_URL));
            return vec![Remote { name: SPEECH_ARCHIVE.into(), url, unpacked }];
        }
    };
    let base = base(SPIKES_BASE_URL);
    splits
        .iter()
        .map(|split| Remote {
            name: format!("{split}.h5.gz"),
            url: format!("{base}/{split}.h5.gz"),
            unpacked: out.join(format!("{split}.h5")),
        })
        .collect()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// `md5sums.txt`: lines of `<md5> <file name>` (a `*` before the name marks binary mode).
fn md5_list(agent: &ureq::Agent, url: &str) -> Result<HashMap<String, String>> {
    let response = agent.get(url).call().with_context(|| format!("cannot reach {url}"))?;
    ensure!(response.status().is_success(), "{url} answered HTTP {}", response.status());
    let text = response.into_body().read_to_string().with_context(|| format!("cannot read {url}"))?;
    Ok(parse_md5_list(&text))
}

fn parse_md5_list(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (hash, name) = (fields.next()?, fields.next()?);
            Some((name.trim_start_matches('*').to_string(), hash.to_ascii_lowercase()))
        })
        .collect()
}

/// Makes `target` a verified copy of `url`: an existing `target` is checked (and fetched again
/// if it fails); otherwise the part file is fetched or resumed, checked and renamed.
fn fetch_verified(agent: &ureq::Agent, url: &str, target: &Path, expected: &Expected, quiet: bool) -> Result<()> {
    if target.is_file() {
        if digest_matches(target, expected)?.is_ok() {
            return Ok(());
        }
        eprintln!("{} does not match its checksum: fetching it again", target.display());
        std::fs::remove_file(target).with_context(|| format!("cannot remove {}", target.display()))?;
    }
    let part = part_path(target);
    let started = Instant::now();
    let bytes = fetch_part(agent, url, &part, quiet)?;
    if let Err(got) = digest_matches(&part, expected)? {
        std::fs::remove_file(&part).with_context(|| format!("cannot remove {}", part.display()))?;
        bail!(
            "{url}: checksum mismatch, {expected} expected but the download has {got}; it was deleted, run the same command to fetch it again"
        );
    }
    std::fs::rename(&part, target).with_context(|| format!("cannot move {} to {}", part.display(), target.display()))?;
    println!(
        "{}: {:.1} MiB in {:.1} s, checksum ok",
        target.file_name().unwrap_or_default().to_string_lossy(),
        bytes as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `.NAME.part` beside `target`.
fn part_path(target: &Path) -> PathBuf {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    target.with_file_name(format!(".{name}.part"))
}

/// Fetches `url` into `part`, resuming from its current length; returns the complete length.
fn fetch_part(agent: &ureq::Agent, url: &str, part: &Path, quiet: bool) -> Result<u64> {
    let offset = std::fs::metadata(part).map_or(0, |m| m.len());
    let mut request = agent.get(url);
    if offset > 0 {
        request = request.header("Range", format!("bytes={offset}-"));
    }
    let response = request.call().with_context(|| format!("cannot reach {url}"))?;
    let status = response.status().as_u16();
    let resumed = match status {
        200 => false,
        206 => true,
        416 if offset > 0 => return Ok(offset),
        _ => bail!("{url} answered HTTP {status}"),
    };
    let length = response.body().content_length();
    let start = if resumed { offset } else { 0 };
    if resumed {
        println!("{}: resuming after {:.1} MiB", url, offset as f64 / (1 << 20) as f64);
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(part)
        .with_context(|| format!("cannot open {}", part.display()))?;
    let total = length.map(|n| start + n);
    let label = url.rsplit('/').next().unwrap_or(url).to_string();
    let progress = Progress::new(&label, total.unwrap_or(0), Unit::Bytes, quiet);
    progress.set_position(start);
    let mut reader = response.into_body().into_reader();
    let received = copy_with_progress(&mut reader, &mut file, &progress)
        .and_then(|n| file.sync_all().map(|()| n).map_err(anyhow::Error::from))
        .with_context(|| {
            format!("download of {url} stopped; the part is kept in {}: run the same command to resume", part.display())
        })?;
    let done = start + received;
    if let Some(total) = total {
        ensure!(
            done == total,
            "download of {url} stopped after {done} of {total} bytes; the part is kept in {}: run the same command to resume",
            part.display()
        );
    }
    Ok(done)
}

fn copy_with_progress(reader: &mut impl Read, file: &mut std::fs::File, progress: &Progress) -> Result<u64> {
    let mut buffer = vec![0u8; 1 << 16];
    let mut received = 0u64;
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            return Ok(received);
        }
        file.write_all(&buffer[..n])?;
        received += n as u64;
        progress.advance(n as u64);
    }
}

/// `Ok(())` when the file has the expected checksum, `Err(actual)` when not.
fn digest_matches(path: &Path, expected: &Expected) -> Result<std::result::Result<(), String>> {
    let actual = match expected {
        Expected::Md5(_) => hex_digest::<Md5>(path)?,
        Expected::Sha256(_) => hex_digest::<Sha256>(path)?,
    };
    let (Expected::Md5(want) | Expected::Sha256(want)) = expected;
    Ok(if &actual == want { Ok(()) } else { Err(actual) })
}

fn hex_digest<D: sha2::Digest>(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = D::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Unpacks a verified archive: `.h5.gz` to `.h5` beside it, the Speech Commands archive to its
/// folder (through a temporary folder, renamed when complete).
fn unpack(dataset: Dataset, archive: &Path, out: &Path) -> Result<()> {
    if dataset != Dataset::Gsc {
        let name = archive.file_name().unwrap_or_default().to_string_lossy();
        spikes::locate(out, name.trim_end_matches(".h5.gz"))?;
        return Ok(());
    }
    let folder = SPEECH_FOLDER.iter().fold(out.to_path_buf(), |path, part| path.join(part));
    untar_gz(archive, &folder)
}

/// Unpacks a `.tar.gz` into `folder`, which appears only once every entry is written.
pub fn untar_gz(archive: &Path, folder: &Path) -> Result<()> {
    let name = folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = folder.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&temporary);
    std::fs::create_dir_all(&temporary).with_context(|| format!("cannot create {}", temporary.display()))?;
    let file = std::fs::File::open(archive).with_context(|| format!("cannot read {}", archive.display()))?;
    let unpacked = tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(&temporary)
        .with_context(|| format!("cannot unpack {} into {}", archive.display(), temporary.display()))
        .and_then(|()| {
            std::fs::rename(&temporary, folder)
                .with_context(|| format!("cannot move {} to {}", temporary.display(), folder.display()))
        });
    if unpacked.is_err() {
        let _ = std::fs::remove_dir_all(&temporary);
    }
    unpacked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_lists_are_read_with_or_without_binary_markers() {
        let list = parse_md5_list("F3252AEB  shd_train.h5.gz\n1503a506 *shd_test.h5.gz\n\n");
        assert_eq!(list["shd_train.h5.gz"], "f3252aeb");
        assert_eq!(list["shd_test.h5.gz"], "1503a506");
    }

    #[test]
    fn each_dataset_has_its_files() {
        let names = |dataset| remotes(dataset, Path::new("d"), None).into_iter().map(|r| r.url).collect::<Vec<_>>();
        assert_eq!(
            names(Dataset::Shd),
            ["https://zenkelab.org/datasets/shd_train.h5.gz", "https://zenkelab.org/datasets/shd_test.h5.gz"]
        );
        assert_eq!(names(Dataset::Ssc).len(), 3);
        assert_eq!(names(Dataset::Gsc), ["http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"]);
        let mirrored = remotes(Dataset::Gsc, Path::new("d"), Some("http://127.0.0.1:9/x/"));
        assert_eq!(mirrored[0].url, "http://127.0.0.1:9/x/speech_commands_v0.02.tar.gz");
        assert_eq!(mirrored[0].unpacked, Path::new("d/SpeechCommands/speech_commands_v0.02"));
    }

    #[test]
    fn a_tar_gz_unpacks_whole_or_not_at_all() {
        let dir = std::env::temp_dir().join(format!("snn-delays-untar-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let archive = dir.join("a.tar.gz");
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            std::fs::File::create(&archive).unwrap(),
            flate2::Compression::fast(),
        ));
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, "yes/a_nohash_0.wav", &b"RIFF!"[..]).unwrap();
        builder.into_inner().unwrap().finish().unwrap();
        let folder = dir.join("speech");
        untar_gz(&archive, &folder).unwrap();
        assert_eq!(std::fs::read(folder.join("yes/a_nohash_0.wav")).unwrap(), b"RIFF!");
        let truncated = dir.join("cut.tar.gz");
        let bytes = std::fs::read(&archive).unwrap();
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let failed = untar_gz(&truncated, &dir.join("cut"));
        assert!(format!("{:#}", failed.unwrap_err()).contains("cut.tar.gz"));
        assert!(!dir.join("cut").exists(), "no folder from a broken archive");
    }
}
