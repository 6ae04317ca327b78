//! One error type for every subcommand: a message for stderr and the exit code it implies.

use std::process::ExitCode;

/// A failed command: printed as one line on stderr, exit code 1 (runtime) or 2 (usage).
#[derive(Debug)]
pub(crate) struct CliError {
    code: u8,
    message: String,
}

impl CliError {
    /// The command could not do its work (network, credentials, server refusal): exit 1.
    pub(crate) fn runtime(message: impl std::fmt::Display) -> Self {
        Self {
            code: 1,
            message: message.to_string(),
        }
    }

    /// The command was given bad input (flags, values, configuration file): exit 2.
    pub(crate) fn usage(message: impl std::fmt::Display) -> Self {
        Self {
            code: 2,
            message: message.to_string(),
        }
    }

    /// A failure that is already reported in the command's own output: exit 1, print nothing more.
    pub(crate) fn silent_failure() -> Self {
        Self {
            code: 1,
            message: String::new(),
        }
    }

    pub(crate) fn report(self) -> ExitCode {
        if !self.message.is_empty() {
            eprintln!("dsql: {}", self.message);
        }
        ExitCode::from(self.code)
    }
}
