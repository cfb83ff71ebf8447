//! Debouncing file-watch events, shared by the plugin folder and the config
//! watchers: a file written in several steps, or a deploy touching several
//! files, is acted on once, when it is complete.

use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;

/// Quiet period after the last event before a burst counts as over.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// Waits for the next burst of events and for its end (no event for
/// [`DEBOUNCE`]); `false` once the watcher is gone.
pub async fn next_burst(events: &mut UnboundedReceiver<()>) -> bool {
    if events.recv().await.is_none() {
        return false;
    }
    loop {
        match tokio::time::timeout(DEBOUNCE, events.recv()).await {
            Ok(Some(())) => continue,
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}
