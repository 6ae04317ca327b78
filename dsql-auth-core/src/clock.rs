//! Time, passed in. Nothing on the signing path calls `SystemTime::now()` directly, so the crate
//! runs on `wasm32-unknown-unknown` (where `now()` panics) and tests can freeze or move time.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::SystemTime;

/// A source of the current time.
pub trait Clock: Send + Sync + Debug {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// A shareable clock.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clock (`SystemTime::now()`). Not usable on `wasm32-unknown-unknown`:
/// supply a clock of your own there.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that shows a time you set: for tests and reproducible signing (`dsql token --at`).
#[derive(Debug, Default)]
pub struct ManualClock {
    now: std::sync::Mutex<Option<SystemTime>>,
}

impl ManualClock {
    /// A clock frozen at `at`.
    pub fn new(at: SystemTime) -> Self {
        Self {
            now: std::sync::Mutex::new(Some(at)),
        }
    }

    /// Moves the clock to `at`.
    pub fn set(&self, at: SystemTime) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = Some(at);
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let mut now = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *now = Some(now.unwrap_or(SystemTime::UNIX_EPOCH) + by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.now
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}
