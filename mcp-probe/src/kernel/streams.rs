//! The kernel maps the agent writes back to: the `StreamControl` the stream stage drives.

use aya::maps::{HashMap as BpfHashMap, MapData};
use mcp_probe_common::{
    verdict, FdState, StreamState, FDS_ENTRIES, FDS_MAP, STREAMS_ENTRIES, STREAMS_MAP,
    WATCHED_ENTRIES, WATCHED_MAP,
};

use std::sync::Arc;

use crate::{host::Host, model::StreamControl};

/// The kernel maps the agent writes: per-stream verdicts (to drop streams found not to be
/// JSON-RPC), the processes whose exits are reported, and the descriptor verdicts of
/// processes that are gone.
pub struct KernelStreams {
    streams: BpfHashMap<MapData, u64, StreamState>,
    watched: BpfHashMap<MapData, u32, u32>,
    fds: BpfHashMap<MapData, u64, FdState>,
    /// Whether a process exists (exit records say when a watched one exits; the others
    /// are looked for).
    host: Arc<dyn Host>,
}

impl KernelStreams {
    /// The loader hands over the maps it took from the loaded object.
    pub(super) fn new(
        streams: BpfHashMap<MapData, u64, StreamState>,
        watched: BpfHashMap<MapData, u32, u32>,
        fds: BpfHashMap<MapData, u64, FdState>,
        host: Arc<dyn Host>,
    ) -> Self {
        Self {
            streams,
            watched,
            fds,
            host,
        }
    }
}

impl StreamControl for KernelStreams {
    fn process_exists(&self, tgid: u32) -> bool {
        self.host.process_exists(tgid)
    }

    fn sweep_maps(
        &mut self,
        gone: &mut dyn FnMut(u32) -> bool,
    ) -> Vec<(&'static str, usize, usize)> {
        // Descriptor verdicts of exited processes would otherwise wait for LRU eviction, and
        // a process that reuses the pid would inherit them.
        let mut verdict_of_gone = std::collections::HashMap::new();
        let keys: Vec<u64> = self.fds.keys().flatten().collect();
        let mut dropped = 0usize;
        for key in &keys {
            let tgid = (key >> 32) as u32;
            if *verdict_of_gone.entry(tgid).or_insert_with(|| gone(tgid))
                && self.fds.remove(key).is_ok()
            {
                dropped += 1;
            }
        }
        if dropped > 0 {
            tracing::debug!(dropped, "descriptor verdicts of exited processes dropped");
        }
        vec![
            (FDS_MAP, keys.len() - dropped, FDS_ENTRIES as usize),
            (
                STREAMS_MAP,
                self.streams.keys().count(),
                STREAMS_ENTRIES as usize,
            ),
            (
                WATCHED_MAP,
                self.watched.keys().count(),
                WATCHED_ENTRIES as usize,
            ),
        ]
    }

    fn watch_process(&mut self, tgid: u32) -> bool {
        match self.watched.insert(tgid, 1, 0) {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(tgid, error = %e, "cannot watch process");
                false
            }
        }
    }

    fn ignore_stream(&mut self, stream_id: u64) {
        let Ok(mut state) = self.streams.get(&stream_id, 0) else {
            return;
        };
        state.verdict = verdict::IGNORED;
        if let Err(e) = self.streams.insert(stream_id, state, 0) {
            tracing::debug!(stream_id, error = %e, "could not mark stream ignored");
        }
    }
}
