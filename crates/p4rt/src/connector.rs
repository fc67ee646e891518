//! The TCP connector of the P4Runtime channel: tonic's own cannot set `TCP_USER_TIMEOUT`.

use std::time::Duration;

/// The channel's TCP connector: a connect bounded by `timeout`, `TCP_NODELAY`, and
/// `TCP_USER_TIMEOUT` when set (tonic's own connector cannot set it).
pub(crate) fn tcp(
    timeout: Duration,
    user_timeout: Option<Duration>,
) -> impl tower::Service<
    tonic::codegen::http::Uri,
    Response = hyper_util::rt::TokioIo<tokio::net::TcpStream>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
+ Send {
    tower::service_fn(move |uri: tonic::codegen::http::Uri| async move {
        use std::io::{Error, ErrorKind};
        let host = uri
            .host()
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, format!("no host in {uri}")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(80);
        let s = tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port)))
            .await
            .map_err(|_| {
                Error::new(ErrorKind::TimedOut, format!("connect timeout {timeout:?}"))
            })??;
        s.set_nodelay(true)?;
        if let Some(t) = user_timeout {
            socket2::SockRef::from(&s).set_tcp_user_timeout(Some(t))?;
        }
        Ok(hyper_util::rt::TokioIo::new(s))
    })
}
