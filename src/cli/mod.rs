//! Command-line interface: argument parsing and dispatch to one module per subcommand.

mod bench_cmd;
mod config_cmd;
mod data_cmd;
mod demo;
mod devices_cmd;
mod eval_cmd;
mod export_cmd;
mod forward;
mod infer_cmd;
mod init;
mod launch_cmd;
pub use launch_cmd::RankFailed;
mod replay_cmd;
mod reproduce_cmd;
mod schedule_cmd;
mod synth_cmd;
mod train_cmd;

use crate::config::{Config, ConfigSource, Preset};
use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use tch::Device;

#[derive(Parser, Debug)]
#[command(
    name = "snn-delays",
    version,
    about = "Learning synaptic delays in spiking neural networks with DCLS (ICLR 2024), on libtorch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train with the paper's procedure into a run directory (config, TensorBoard, checkpoints).
    Train(train_cmd::TrainArgs),
    /// Train the dataset's preset over several seeds under each selection protocol and write a
    /// results table beside the published figures.
    Reproduce(reproduce_cmd::ReproduceArgs),
    /// Write a checkpoint's integer-delay eval form for deployment (delays, netx, nir), or its weights as a state dict.
    Export(export_cmd::ExportArgs),
    /// Run an exported model with the pure-Rust integer-delay engine, in batches or streaming.
    Infer(infer_cmd::InferArgs),
    /// Start N local ranks of a data-parallel `train` (as torchrun does on one machine).
    Launch(launch_cmd::LaunchArgs),
    /// Evaluate a checkpoint with integer delays on one split.
    Eval(eval_cmd::EvalArgs),
    /// Print the learning rates, Adam beta1 and sigma in force during each epoch.
    Schedule(schedule_cmd::ScheduleArgs),
    /// Run the training procedure on given batches and masks (optimizer parity tool).
    Replay(replay_cmd::ReplayArgs),
    /// Print the full effective configuration (fields and derived values) as JSON.
    Config(ConfigArgs),
    /// Write the seeded initial weights as a reference state_dict (safetensors).
    Init(init::InitArgs),
    /// Run the network on given weights and input and write output, loss and gradients
    /// (the parity tool: compare with the PyTorch reference on identical weights).
    Forward(forward::ForwardArgs),
    /// Download, inspect, export or benchmark a dataset.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// Write a generated delay-task dataset in the SHD layout (no download needed).
    Synth(synth_cmd::SynthArgs),
    /// One forward and backward pass on a generated batch: loss, parameter count and timings.
    Demo(demo::DemoArgs),
    /// Time training steps or evaluation passes on a given batch (used by `make bench`).
    Bench(bench_cmd::BenchArgs),
    /// Print, as JSON, what this binary computes on here: libtorch's CUDA, NVRTC, each GPU and
    /// whether the fused neuron kernel runs there.
    Devices(devices_cmd::DevicesArgs),
}

/// Where the configuration comes from; the same flags on every subcommand that takes one.
#[derive(Args, Debug, Clone)]
pub struct ConfigArgs {
    /// Start from this preset: a dataset's feedforward delays, or DelRec's recurrent delays
    /// (delrec-ssc, delrec-shd) [default: the config file's `dataset`, else shd]
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// JSON config file (e.g. as printed by `snn-delays config`); its keys override the preset
    #[arg(long, value_name = "FILE.json")]
    pub config: Option<PathBuf>,
    /// Override one key, e.g. `--set epochs=5`; repeatable; the value is JSON or a plain string
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl ConfigArgs {
    pub fn load(&self) -> Result<Config> {
        ConfigSource { preset: self.preset, file: self.config.as_deref(), overrides: &self.set }.load()
    }

    /// The configuration of a network about to be built at `steps` × `batch`: its memory is
    /// checked against the machine's first.
    pub fn load_for_network(&self, steps: usize, batch: usize) -> Result<Config> {
        let config = self.load()?;
        config.check_feedforward()?;
        crate::memory::Budget::machine()
            .check("this network", &crate::memory::training_step(&config, steps as u64, batch as u64))?;
        Ok(config)
    }
}

/// Where to compute; the same flags on every subcommand that takes a device.
#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// auto (CUDA device 0 when present, else the CPU), cpu, cuda or cuda:N (each rank of a
    /// multi-process CUDA run takes visible device LOCAL_RANK mod the number it sees)
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Use cuDNN, deterministic and with TF32 off (off by default, as in the reference)
    #[arg(long)]
    pub cudnn: bool,
}

impl DeviceArgs {
    /// The device, after applying the cuDNN setting.
    pub fn select(&self) -> Result<Device> {
        crate::device::set_cudnn(self.cudnn);
        crate::device::select(&self.device)
    }

    pub fn is_auto(&self) -> bool {
        self.device == "auto"
    }
}

/// How training runs on this machine; the same flags on `train` and `reproduce`.
#[derive(Args, Debug, Clone)]
pub struct RunFlags {
    #[command(flatten)]
    pub device: DeviceArgs,
    /// CPU threads for libtorch and data loading [default: all cores]
    #[arg(long)]
    pub threads: Option<usize>,
    /// No progress bars (the default when stderr is not a terminal)
    #[arg(long)]
    pub quiet: bool,
    /// Memory a training step may use, in GiB [default: this machine's memory]
    #[arg(long, value_name = "GB")]
    pub memory_limit_gb: Option<f64>,
}

impl RunFlags {
    /// Sets the threads and picks the device; the options of a run in `run_dir`.
    pub fn options(&self, run_dir: PathBuf, resume: bool, stop_after: Option<usize>) -> Result<crate::train::run::RunOptions> {
        set_threads(self.threads)?;
        Ok(crate::train::run::RunOptions {
            run_dir,
            resume,
            quiet: self.quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()),
            stop_after,
            device: self.device.select()?,
            device_auto: self.device.is_auto(),
            memory: crate::memory::Budget::new(self.memory_limit_gb)?,
            threads: self.threads,
            group: None,
        })
    }
}

/// Whether two paths name the same existing file.
pub(crate) fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b)
}

/// `config` as given, or, when it names neither a preset nor a file, with the `config.json`
/// beside `weights` (a run directory's) as its file.
pub(crate) fn config_beside(config: &ConfigArgs, weights: &std::path::Path) -> ConfigArgs {
    let mut config = config.clone();
    let beside = weights.with_file_name("config.json");
    if config.config.is_none() && config.preset.is_none() && beside.is_file() {
        config.config = Some(beside);
    }
    config
}

/// Sets the CPU threads of libtorch and of our own parallel loops (rayon); all cores when `None`.
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(threads) = threads {
        anyhow::ensure!((1..=4096).contains(&threads), "--threads must be between 1 and 4096, got {threads}");
        tch::set_num_threads(threads as i32);
        let _ = rayon::ThreadPoolBuilder::new().num_threads(threads).build_global();
    }
    Ok(())
}

/// Parses the command line and runs the subcommand. cuDNN is disabled, as in the reference.
pub fn run() -> Result<()> {
    let cli = Cli::parse();
    crate::process::configure();
    crate::device::set_cudnn(false);
    match cli.command {
        Command::Config(args) => config_cmd::run(&args),
        Command::Train(args) => train_cmd::run(&args),
        Command::Eval(args) => eval_cmd::run(&args),
        Command::Export(args) => export_cmd::run(&args),
        Command::Infer(args) => infer_cmd::run(&args),
        Command::Reproduce(args) => reproduce_cmd::run(&args),
        Command::Launch(args) => launch_cmd::run(&args),
        Command::Schedule(args) => schedule_cmd::run(&args),
        Command::Replay(args) => replay_cmd::run(&args),
        Command::Init(args) => init::run(&args),
        Command::Forward(args) => forward::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Bench(args) => bench_cmd::run(&args),
        Command::Devices(args) => devices_cmd::run(&args),
        Command::Data(command) => data_cmd::run(&command),
        Command::Synth(args) => synth_cmd::run(&args),
    }
}
