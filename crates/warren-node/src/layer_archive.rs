//! A layer directory as a tar stream (ownership, modes, device nodes such as overlay whiteouts
//! and xattrs kept), for a node that lacks the layer. Written on a blocking thread into a
//! bounded channel, so a slow reader slows the writer instead of filling memory.

use std::path::PathBuf;

use futures_util::Stream;
use tokio::sync::mpsc;

struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Vec<u8>>>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(buf.to_vec()))
            .map_err(|_| std::io::Error::other("the reader went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A layer key as the control plane names it: no path separators or dots at the start.
pub fn valid_layer_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 200
        && !key.starts_with('.')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// The tar stream of `dir`'s contents.
pub fn tar_stream(dir: PathBuf) -> impl Stream<Item = std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(8);
    tokio::task::spawn_blocking(move || {
        let mut tar = tar::Builder::new(ChannelWriter { tx: tx.clone() });
        tar.follow_symlinks(false);
        tar.mode(tar::HeaderMode::Complete);
        let written = tar.append_dir_all(".", &dir).and_then(|()| tar.finish());
        if let Err(e) = written {
            let _ = tx.blocking_send(Err(e));
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    })
}
