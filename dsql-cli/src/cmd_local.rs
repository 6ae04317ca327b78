//! `dsql local` (being written).

use crate::error::CliError;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) async fn run(_args: Args) -> Result<(), CliError> {
    Err(CliError::runtime("dsql local is not built yet"))
}
