use anyhow::Result;
use clap::Subcommand;
#[derive(Subcommand)]
pub enum BenchCommand {
    Zkllm,
}
pub fn run(_c: BenchCommand) -> Result<()> {
    Ok(())
}
