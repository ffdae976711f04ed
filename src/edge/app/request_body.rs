//! Request bodies, read in full from the client before a worker is chosen:
//! a slow upload then costs the edge a buffer, never a Python worker.
//! Small bodies stay in memory; larger ones spill to an unlinked temp file.

use pingora_proxy::Session;
use std::io::Write;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

/// Bodies up to this size stay in memory.
const IN_MEMORY: usize = 1 << 20;

pub enum RequestBody {
    Memory(Vec<u8>),
    /// Read with positioned reads: shared without a lock.
    File(std::sync::Arc<std::fs::File>, u64),
}

pub enum BodyError {
    TooLarge,
    /// pingora's per-read timeout (`body_timeout`) fired.
    TimedOut,
    Client(String),
    Io(std::io::Error),
}

impl RequestBody {
    pub fn len(&self) -> u64 {
        match self {
            RequestBody::Memory(v) => v.len() as u64,
            RequestBody::File(_, n) => *n,
        }
    }

    /// Reads the whole body from the client, refusing more than `max`.
    pub async fn read(session: &mut Session, max: u64) -> Result<RequestBody, BodyError> {
        let mut mem: Vec<u8> = Vec::new();
        let mut file: Option<std::fs::File> = None;
        let mut total: u64 = 0;
        loop {
            let chunk = session
                .read_request_body()
                .await
                .map_err(|e| match e.etype() {
                    pingora_core::ErrorType::ReadTimedout => BodyError::TimedOut,
                    _ => BodyError::Client(e.to_string()),
                })?;
            let Some(chunk) = chunk else { break };
            total += chunk.len() as u64;
            if total > max {
                return Err(BodyError::TooLarge);
            }
            match file.as_mut() {
                Some(f) => write_blocking(f, &chunk).await?,
                None if mem.len() + chunk.len() > IN_MEMORY => {
                    let mut f = tokio::task::spawn_blocking(tempfile::tempfile)
                        .await
                        .map_err(|e| BodyError::Io(std::io::Error::other(e)))?
                        .map_err(BodyError::Io)?;
                    write_blocking(&mut f, &mem).await?;
                    write_blocking(&mut f, &chunk).await?;
                    mem = Vec::new();
                    file = Some(f);
                }
                None => mem.extend_from_slice(&chunk),
            }
        }
        Ok(match file {
            Some(f) => RequestBody::File(std::sync::Arc::new(f), total),
            None => RequestBody::Memory(mem),
        })
    }

    /// Sends the body to a worker; a file body is read off the async threads.
    pub async fn write_to(&self, stream: &mut UnixStream) -> std::io::Result<()> {
        match self {
            RequestBody::Memory(v) => stream.write_all(v).await,
            RequestBody::File(f, len) => {
                let mut offset = 0u64;
                while offset < *len {
                    let f = f.clone();
                    let chunk = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
                        let mut buf = Vec::with_capacity(256 * 1024);
                        crate::edge::files::read::pread_into(&f, &mut buf, offset)?;
                        Ok(buf)
                    })
                    .await
                    .map_err(std::io::Error::other)??;
                    if chunk.is_empty() {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "spooled body shorter than expected",
                        ));
                    }
                    offset += chunk.len() as u64;
                    stream.write_all(&chunk).await?;
                }
                Ok(())
            }
        }
    }
}

// Disk writes happen off the async threads, so they never stall other requests.
async fn write_blocking(f: &mut std::fs::File, data: &[u8]) -> Result<(), BodyError> {
    let mut f2 = f.try_clone().map_err(BodyError::Io)?;
    let data = data.to_vec();
    tokio::task::spawn_blocking(move || f2.write_all(&data))
        .await
        .map_err(|e| BodyError::Io(std::io::Error::other(e)))?
        .map_err(BodyError::Io)
}
