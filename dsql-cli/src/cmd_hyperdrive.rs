//! `dsql hyperdrive` (being written).

use crate::error::CliError;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) async fn run(_args: Args) -> Result<(), CliError> {
    Err(CliError::runtime("dsql hyperdrive is not built yet"))
}
