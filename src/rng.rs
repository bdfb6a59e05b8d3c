//! Torch's one generator per process, seeded and drawn from under one lock.
//!
//! TransformerLens seeds with `torch.manual_seed` and draws from the global generator, and
//! groklens does the same so that its splits and initial weights are TransformerLens's. Two
//! threads doing it at once (tests running in parallel, say) would reseed or consume each
//! other's draws and get another split. Every seeded draw goes through [`seeded`]; a draw
//! from torch's generator that might run beside one must go through it too.

use std::sync::Mutex;

static GENERATOR: Mutex<()> = Mutex::new(());

/// `draw()` right after `torch.manual_seed(seed)`, with no other draw in between.
pub fn seeded<T>(seed: i64, draw: impl FnOnce() -> T) -> T {
    let _held = GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tch::manual_seed(seed);
    draw()
}
