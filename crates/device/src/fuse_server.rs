//! The FUSE dispatcher is the handler a real device uses.

use std::io;

use virtiofsd_fuse::io::{ReplyWriter, RequestReader};
use virtiofsd_fuse::{FileSystem, Server};

use crate::RequestHandler;

impl<F: FileSystem> RequestHandler for Server<F> {
    fn handle<R: RequestReader, W: ReplyWriter>(&self, r: &mut R, w: W) -> io::Result<usize> {
        self.handle_message(r, w).map_err(io::Error::from)
    }

    fn may_block(&self, request_start: &[u8]) -> bool {
        Server::<F>::may_block(request_start)
    }

    /// ENOLCK is what fcntl(2) and flock(2) report when the kernel has no room for another
    /// lock, which is the situation: the guest asked for more waiting locks than we serve.
    fn refuse<R: RequestReader, W: ReplyWriter>(&self, r: &mut R, w: W) -> io::Result<usize> {
        Server::<F>::refuse(self, r, w, libc::ENOLCK).map_err(io::Error::from)
    }

    fn save_state(&self) -> io::Result<Vec<u8>> {
        Server::<F>::save_state(self)
    }

    fn load_state(&self, state: &[u8]) -> io::Result<()> {
        Server::<F>::load_state(self, state)
    }

    fn end_session(&self) {
        Server::<F>::end_session(self)
    }
}
