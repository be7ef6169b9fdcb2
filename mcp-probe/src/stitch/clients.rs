//! The client behind a request: which process writes into a server's stdin pipe, its
//! uid, and the `clientInfo.name` a client process sent.

use crate::{model::StreamKey, HashMap, HashSet};

/// Pipes whose writer, and processes whose uid or client name, are remembered.
const MAX_REMEMBERED: usize = 65_536;

#[derive(Default)]
pub struct Clients {
    /// Pipe -> the process writing into it (the client, for a server's stdin).
    writers: HashMap<StreamKey, u32>,
    /// Client process -> uid (read once per process).
    uids: HashMap<u32, u32>,
    /// Client process -> the `clientInfo.name` it sent (only with sinks), for the client
    /// side of a session whose handshake came before its server was known.
    names: HashMap<u32, String>,
}

impl Clients {
    /// `tgid` wrote into pipe `stream`.
    pub fn wrote(&mut self, stream: StreamKey, tgid: u32) {
        if self.writers.len() < MAX_REMEMBERED {
            self.writers.insert(stream, tgid);
        }
    }

    /// The process writing into pipe `stream`, if seen.
    pub fn writer(&self, stream: &StreamKey) -> Option<u32> {
        self.writers.get(stream).copied()
    }

    /// The uid of `client`, read with `read_uid` the first time only.
    pub fn uid(&mut self, client: u32, read_uid: impl FnOnce(u32) -> Option<u32>) -> Option<u32> {
        if let Some(uid) = self.uids.get(&client) {
            return Some(*uid);
        }
        let uid = read_uid(client)?;
        if self.uids.len() < MAX_REMEMBERED {
            self.uids.insert(client, uid);
        }
        Some(uid)
    }

    /// Client process `tgid` sent `clientInfo.name`.
    pub fn named(&mut self, tgid: u32, name: String) {
        if self.names.len() < MAX_REMEMBERED {
            self.names.insert(tgid, name);
        }
    }

    pub fn name(&self, tgid: u32) -> Option<&String> {
        self.names.get(&tgid)
    }

    pub fn forget_stream(&mut self, stream: StreamKey) {
        self.writers.remove(&stream);
    }

    pub fn forget_process(&mut self, tgid: u32) {
        self.writers.retain(|_, t| *t != tgid);
        self.uids.remove(&tgid);
        self.names.remove(&tgid);
    }

    /// The processes named anywhere in these tables.
    pub fn processes(&self) -> impl Iterator<Item = u32> + '_ {
        self.writers
            .values()
            .copied()
            .chain(self.uids.keys().copied())
            .chain(self.names.keys().copied())
    }

    pub fn forget_dead(&mut self, dead: &HashSet<u32>) {
        self.writers.retain(|_, tgid| !dead.contains(tgid));
        self.uids.retain(|tgid, _| !dead.contains(tgid));
        self.names.retain(|tgid, _| !dead.contains(tgid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writers_uids_and_names_are_remembered_until_their_process_goes() {
        let mut c = Clients::default();
        let pipe = StreamKey { addr: 1, ino: 2 };
        c.wrote(pipe, 10);
        assert_eq!(c.writer(&pipe), Some(10));
        assert_eq!(c.uid(10, |_| Some(1000)), Some(1000));
        assert_eq!(c.uid(10, |_| panic!("read once")), Some(1000));
        assert_eq!(c.uid(11, |_| None), None);
        c.named(10, "inspector".into());
        assert_eq!(c.name(10).map(String::as_str), Some("inspector"));
        assert_eq!(c.processes().filter(|&t| t == 10).count(), 3);
        c.forget_process(10);
        assert_eq!(c.writer(&pipe), None);
        assert_eq!(c.name(10), None);
        assert_eq!(c.processes().count(), 0);
    }
}
