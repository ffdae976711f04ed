//! Requests for the Python app: read the request body, take a worker from
//! the pool (queue, 503), write the request to it over its Unix socket, and
//! relay its response (compression, the response buffer).

pub(crate) mod forward;
pub mod pool;
pub(crate) mod relay;
pub(crate) mod request_body;
pub(crate) mod response_buffer;
pub(crate) mod upstream;
