//! A bodiless HTTP/1 request to another node's API (wolfctl, `wolfctl migrate`'s
//! snapshot download), over hyper's client connection.

use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Response};
use hyper_util::rt::TokioIo;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// `method path` to the API at `authority` (`host:port`), with `Authorization: Bearer
/// token` when given. The body is the caller's to read.
pub async fn request(
    authority: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> Result<Response<Incoming>, Error> {
    let stream = tokio::net::TcpStream::connect(authority).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::ACCEPT, "application/json");
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    Ok(sender
        .send_request(req.body(Empty::<Bytes>::new())?)
        .await?)
}
