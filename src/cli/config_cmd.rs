//! `snn-delays config`: prints the effective configuration as pretty JSON.

use super::ConfigArgs;
use anyhow::Result;

pub fn run(args: &ConfigArgs) -> Result<()> {
    let config = args.load()?;
    println!("{}", serde_json::to_string_pretty(&config.to_json())?);
    Ok(())
}
