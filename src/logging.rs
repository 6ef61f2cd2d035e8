//! Run logging behind one small interface: TensorBoard event files (summaries built with
//! tensorboard-rs, written by [`crate::event_file`]), and the per-epoch `metrics.jsonl`, rewritten
//! atomically each epoch. A failed write is kept and returned by [`Board::flush`], once per epoch.
//!
//! Histograms use explicit buckets: one per integer for delays, 30 equal-width for weights.
//! Text (the config) is a `text`-plugin string tensor, which tensorboard-rs cannot write itself.

use crate::atomic;
use crate::event_file::EventFile;
use anyhow::{Context, Result};
use protobuf::RepeatedField;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};
use tensorboard_proto::summary::{Summary, SummaryMetadata, SummaryMetadata_PluginData, Summary_Value};
use tensorboard_proto::tensor::TensorProto;
use tensorboard_proto::tensor_shape::{TensorShapeProto, TensorShapeProto_Dim};
use tensorboard_proto::types::DataType;
use tensorboard_rs::summary::{histogram_raw, scalar};

const WEIGHT_BUCKETS: usize = 30;

/// TensorBoard events of one run.
pub struct Board {
    events: EventFile,
    /// The first failed write; later writes are skipped until [`Board::flush`] reports it.
    failure: Option<anyhow::Error>,
}

impl Board {
    /// Opens a new event file in `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<Board> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Board { events: EventFile::create_in(dir)?, failure: None })
    }

    fn add(&mut self, summary: Summary, step: usize) {
        if self.failure.is_none() {
            self.failure = self.events.add(summary, step).err();
        }
    }

    pub fn scalar(&mut self, tag: &str, value: f64, step: usize) {
        self.add(scalar(tag, value as f32), step);
    }

    /// A histogram of integer values (delays in steps) with one bucket per integer in `0..=max`.
    pub fn integer_histogram(&mut self, tag: &str, values: &Tensor, max: i64, step: usize) {
        let flat = host_values(values);
        let counts = flat.to_kind(Kind::Int64).bincount(None::<Tensor>, max + 1).to_kind(Kind::Double);
        let limits: Vec<f64> = (0..=max).map(|i| i as f64 + 0.5).collect();
        self.histogram(tag, &flat, &limits, &counts, step);
    }

    /// A histogram of real values with equal-width buckets between their minimum and maximum
    /// (none when a value is not finite).
    pub fn value_histogram(&mut self, tag: &str, values: &Tensor, step: usize) {
        let flat = host_values(values);
        let (low, high) = (flat.min().double_value(&[]), flat.max().double_value(&[]));
        if !(low.is_finite() && high.is_finite()) {
            return;
        }
        let width = ((high - low) / WEIGHT_BUCKETS as f64).max(f64::MIN_POSITIVE);
        let limits: Vec<f64> = (1..=WEIGHT_BUCKETS).map(|i| low + width * i as f64).collect();
        self.histogram(tag, &flat, &limits, &flat.histc(WEIGHT_BUCKETS as i64), step);
    }

    /// Writes a histogram of `flat` (from [`host_values`]) with one count per bucket limit.
    fn histogram(&mut self, tag: &str, flat: &Tensor, limits: &[f64], counts: &Tensor, step: usize) {
        let counts: Vec<f64> = (0..limits.len() as i64).map(|i| counts.double_value(&[i])).collect();
        let summary = histogram_raw(
            tag,
            flat.min().double_value(&[]),
            flat.max().double_value(&[]),
            flat.numel() as f64,
            flat.sum(Kind::Double).double_value(&[]),
            flat.square().sum(Kind::Double).double_value(&[]),
            limits,
            &counts,
        );
        self.add(summary, step);
    }

    /// A text entry, shown in TensorBoard's Text tab.
    pub fn text(&mut self, tag: &str, content: &str, step: usize) {
        let mut plugin = SummaryMetadata_PluginData::new();
        plugin.set_plugin_name("text".to_string());
        let mut metadata = SummaryMetadata::new();
        metadata.set_plugin_data(plugin);
        let mut dim = TensorShapeProto_Dim::new();
        dim.set_size(1);
        let mut shape = TensorShapeProto::new();
        shape.set_dim(RepeatedField::from(vec![dim]));
        let mut tensor = TensorProto::new();
        tensor.set_dtype(DataType::DT_STRING);
        tensor.set_tensor_shape(shape);
        tensor.set_string_val(RepeatedField::from(vec![content.as_bytes().to_vec()]));
        let mut value = Summary_Value::new();
        value.set_tag(tag.to_string());
        value.set_metadata(metadata);
        value.set_tensor(tensor);
        let mut summary = Summary::new();
        summary.set_value(RepeatedField::from(vec![value]));
        self.add(summary, step);
    }

    /// Writes what is buffered; the error of any failed write since the last flush.
    pub fn flush(&mut self) -> Result<()> {
        match self.failure.take() {
            Some(failure) => Err(failure),
            None => self.events.flush(),
        }
    }
}

/// The values as a flat f64 tensor in host memory.
fn host_values(values: &Tensor) -> Tensor {
    values.detach().flatten(0, -1).to_kind(Kind::Double).to_device(tch::Device::Cpu)
}

/// `metrics.jsonl`: one JSON object per epoch, the whole file rewritten atomically.
pub struct MetricsFile {
    path: PathBuf,
    lines: Vec<String>,
}

impl MetricsFile {
    pub fn new(path: PathBuf, lines: Vec<String>) -> MetricsFile {
        MetricsFile { path, lines }
    }

    pub fn append(&mut self, record: &serde_json::Value) -> Result<()> {
        self.lines.push(record.to_string());
        let mut text = self.lines.join("\n");
        text.push('\n');
        atomic::write_bytes(&self.path, text.as_bytes())
    }
}
