//! Google Speech Commands v0.02, 35 words (docs/method.md §5.5): word folders of 16 kHz 16-bit
//! mono WAV files with `validation_list.txt` and `testing_list.txt`. Training is every
//! `WORD/*_nohash_*.wav` in neither list, sorted; validation and test follow their lists' order.
//! `_background_noise_` is excluded. Labels index the fixed alphabetical word list.
//! The torchaudio layout `ROOT/SpeechCommands/speech_commands_v0.02` is found too.

use super::Split;
use anyhow::{bail, ensure, Context, Result};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub const WORDS: [&str; 35] = [
    "backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four", "go", "happy", "house",
    "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven", "sheila", "six", "stop", "three", "tree",
    "two", "up", "visual", "wow", "yes", "zero",
];

const BACKGROUND: &str = "_background_noise_";

/// The clips of one split, with their labels.
#[derive(Debug)]
pub struct SpeechCommands {
    pub root: PathBuf,
    pub files: Vec<PathBuf>,
    pub labels: Vec<i64>,
}

impl SpeechCommands {
    /// The clips of `split` and their labels, each below `classes`.
    pub fn open(dir: &Path, split: Split, classes: usize) -> Result<SpeechCommands> {
        let root = dataset_root(dir)?;
        let validation = read_list(&root, "validation_list.txt")?;
        let testing = read_list(&root, "testing_list.txt")?;
        let relative = match split {
            Split::Valid => validation,
            Split::Test => testing,
            Split::Train => training_files(&root, &validation, &testing)?,
        };
        let labels = relative.iter().map(|name| label_of(&root, name)).collect::<Result<Vec<_>>>()?;
        if let Some((name, label)) = relative.iter().zip(&labels).find(|(_, &label)| label >= classes as i64) {
            bail!("{}: label {label} is outside 0..{} (config key `n_outputs`)", root.join(name).display(), classes - 1);
        }
        let files = relative.iter().map(|name| root.join(name)).collect();
        Ok(SpeechCommands { root, files, labels })
    }
}

fn dataset_root(dir: &Path) -> Result<PathBuf> {
    let nested = dir.join("SpeechCommands").join("speech_commands_v0.02");
    let root = if nested.is_dir() { nested } else { dir.to_path_buf() };
    ensure!(
        root.join("testing_list.txt").is_file(),
        "{} is not a Speech Commands v0.02 folder (no testing_list.txt)",
        root.display()
    );
    Ok(root)
}

fn read_list(root: &Path, name: &str) -> Result<Vec<String>> {
    let path = root.join(name);
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
}

fn training_files(root: &Path, validation: &[String], testing: &[String]) -> Result<Vec<String>> {
    let held_out: HashSet<&String> = validation.iter().chain(testing).collect();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root).with_context(|| format!("cannot list {}", root.display()))? {
        let folder = entry?.path();
        let word = folder.file_name().unwrap_or_default().to_string_lossy().into_owned();
        if !folder.is_dir() || word == BACKGROUND {
            continue;
        }
        for clip in std::fs::read_dir(&folder)? {
            let name = clip?.file_name().to_string_lossy().into_owned();
            let relative = format!("{word}/{name}");
            if name.ends_with(".wav") && name.contains("_nohash_") && !held_out.contains(&relative) {
                files.push(relative);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn label_of(root: &Path, relative: &str) -> Result<i64> {
    let word = relative.split('/').next().unwrap_or_default();
    match WORDS.iter().position(|w| *w == word) {
        Some(index) => Ok(index as i64),
        None => bail!("{}: `{word}` is not one of the 35 Speech Commands words", root.join(relative).display()),
    }
}

/// Reads a 16 kHz, 16-bit PCM, mono WAV file as samples in [−1, 1) (`int16 / 32768`).
pub fn read_wav(path: &Path) -> Result<Vec<f32>> {
    let reader = hound::WavReader::open(path).with_context(|| format!("{} is not a readable WAV file", path.display()))?;
    let spec = reader.spec();
    ensure!(
        spec.sample_rate == 16_000
            && spec.channels == 1
            && spec.bits_per_sample == 16
            && spec.sample_format == hound::SampleFormat::Int,
        "{}: expected 16 kHz 16-bit PCM mono, got {} Hz, {} channel(s), {} bits {:?}",
        path.display(),
        spec.sample_rate,
        spec.channels,
        spec.bits_per_sample,
        spec.sample_format
    );
    reader
        .into_samples::<i16>()
        .map(|s| s.map(|v| v as f32 / 32768.0))
        .collect::<Result<Vec<f32>, _>>()
        .with_context(|| format!("{}: truncated or corrupt WAV data", path.display()))
}
