//! The FUSE dispatcher is the handler a real device uses.

use std::io;

use virtiofsd_fuse::io::{ReplyWriter, RequestReader};
use virtiofsd_fuse::{FileSystem, Server};

use crate::RequestHandler;

impl<F: FileSystem> RequestHandler for Server<F> {
    fn handle<R: RequestReader, W: ReplyWriter>(&self, r: &mut R, w: W) -> io::Result<usize> {
        self.handle_message(r, w).map_err(io::Error::from)
    }
}
