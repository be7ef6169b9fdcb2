//! A kernel that remembers what the stream stage asked of it, for tests and fuzzing.

use crate::model::StreamControl;

/// Records the streams it was told to ignore, and answers "does this process exist" from
/// a list of exited pids (and, if asked, from the host's `/proc`).
#[derive(Debug, Default, Clone)]
pub struct FakeKernel {
    /// Streams the stream stage turned off, in order.
    pub ignored: Vec<u64>,
    /// Processes the test pretends have exited.
    pub exited: Vec<u32>,
    /// Whether a process not in `exited` exists only if the host's `/proc` lists it, as
    /// the real kernel side answers. Off, every such process exists: tests pick pids that
    /// exist nowhere (above `pid_max`) and still want them alive until they say otherwise.
    pub host_processes: bool,
}

impl FakeKernel {
    /// A fake that asks `/proc` whether a process exists. The fuzz harness uses it: its
    /// own pids exist nowhere, but raw headers from the input may name any pid.
    pub fn on_host() -> Self {
        Self {
            host_processes: true,
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
        !self.exited.contains(&tgid)
            && (!self.host_processes || std::path::Path::new(&format!("/proc/{tgid}")).exists())
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
        let host = FakeKernel::on_host();
        assert!(!host.process_exists(4_200_000));
        assert!(host.process_exists(std::process::id()));
        k.ignore_stream(3);
        assert_eq!(k.ignored, [3]);
    }
}
