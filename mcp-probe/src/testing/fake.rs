//! A kernel that remembers what the stream stage asked of it, for tests and fuzzing.

use std::sync::Arc;

use crate::{host::Host, model::StreamControl};

/// Records the streams it was told to ignore, and answers "does this process exist" from
/// a list of exited pids (and, if given one, from a host).
#[derive(Default, Clone)]
pub struct FakeKernel {
    /// Streams the stream stage turned off, in order.
    pub ignored: Vec<u64>,
    /// Processes the test pretends have exited.
    pub exited: Vec<u32>,
    /// With a host, a process not in `exited` exists only if the host knows it, as the
    /// real kernel side answers. Without, every such process exists: tests pick pids that
    /// exist nowhere (above `pid_max`) and still want them alive until they say otherwise.
    pub host: Option<Arc<dyn Host>>,
}

impl FakeKernel {
    /// A fake that asks `host` whether a process exists.
    pub fn on_host(host: Arc<dyn Host>) -> Self {
        Self {
            host: Some(host),
            ..Self::default()
        }
    }
}

impl StreamControl for FakeKernel {
    fn ignore_stream(&mut self, stream_id: u64) {
        self.ignored.push(stream_id);
    }

    fn watch_process(&mut self, _tgid: u32) -> bool {
        true
    }

    fn sweep_maps(
        &mut self,
        _gone: &mut dyn FnMut(u32) -> bool,
    ) -> Vec<(&'static str, usize, usize)> {
        Vec::new()
    }

    fn process_exists(&self, tgid: u32) -> bool {
        !self.exited.contains(&tgid) && self.host.as_ref().is_none_or(|h| h.process_exists(tgid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_processes_have_exited() {
        let mut k = FakeKernel::default();
        k.exited.push(7);
        assert!(k.process_exists(8) && !k.process_exists(7));
        let fake_host = crate::host::FakeHost::new();
        fake_host.set_exists(9);
        let host = FakeKernel::on_host(Arc::new(fake_host));
        assert!(!host.process_exists(8) && host.process_exists(9));
        k.ignore_stream(3);
        assert_eq!(k.ignored, [3]);
    }
}
