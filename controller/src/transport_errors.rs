//! What went wrong under a gRPC call, in words (issue 14, item 10): tonic reports a failed
//! TLS handshake or a non-HTTP/2 peer as `Unknown: transport error` or `Internal: h2 protocol
//! error`; [`explain`] walks the error's causes (rustls, hyper, h2, io) and names the cause:
//! the controller's certificate is from an unknown CA or does not name the host, the
//! controller refused our certificate, the port does not speak plain HTTP/2 (TLS), the
//! connection was refused.

use dvipa_tls::rustls;
use std::error::Error;

/// The causes of `e`, outermost first.
fn causes<'a>(e: &'a (dyn Error + 'static)) -> Vec<&'a (dyn Error + 'static)> {
    let mut v = vec![e];
    let mut cur = e.source();
    while let Some(c) = cur {
        v.push(c);
        cur = c.source();
    }
    v
}

/// The cause of a transport failure in words, or `None` when nothing known is in the chain.
/// `server_name`: the name the client expected in the controller's certificate.
pub fn explain(e: &(dyn Error + 'static), server_name: Option<&str>) -> Option<String> {
    let chain = causes(e);
    for c in &chain {
        if let Some(t) = c.downcast_ref::<rustls::Error>() {
            return Some(tls(t, server_name));
        }
    }
    for c in &chain {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if let Some(t) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return Some(tls(t, server_name));
            }
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    return Some(
                        "connection refused: nothing listens on that address and port \
                                 (is the controller running, is --admin right?)"
                            .into(),
                    );
                }
                std::io::ErrorKind::ConnectionReset => {
                    return Some(
                        "the controller closed the connection (a TLS port answering \
                                 a plaintext client, or a refused client certificate)"
                            .into(),
                    );
                }
                _ => {}
            }
        }
    }
    let text: Vec<String> = chain.iter().map(|c| c.to_string()).collect();
    let all = text.join(": ");
    // tokio-rustls hands some TLS errors over as text only.
    for (needle, msg) in [
        ("received fatal alert: UnknownCA", TLS_UNKNOWN_CA_US),
        ("received fatal alert: BadCertificate", TLS_UNKNOWN_CA_US),
        (
            "received fatal alert: CertificateRequired",
            TLS_CERT_REQUIRED,
        ),
        ("UnknownIssuer", TLS_UNKNOWN_CA_THEM),
        ("received corrupt message", TLS_NOT_TLS),
    ] {
        if all.contains(needle) {
            return Some(msg.into());
        }
    }
    if all.contains("NotValidForName") {
        return Some(name_mismatch(server_name));
    }
    // A TLS server's alert record read as an HTTP/2 frame header is "too big".
    if all.contains("frame with invalid size") {
        return Some(
            "the controller did not answer in plain HTTP/2 (its first bytes are no HTTP/2 \
             frame): the port needs TLS; give --ca, --cert and --key (or use https://)"
                .into(),
        );
    }
    None
}

const TLS_UNKNOWN_CA_US: &str = "TLS: the controller refused our client certificate (--cert): \
                                  not signed by a CA it trusts (unknown CA)";
const TLS_UNKNOWN_CA_THEM: &str = "TLS: the controller's certificate is not signed by the CA \
                                   of --ca (DVIPA_ADMIN_CA); unknown CA";
const TLS_CERT_REQUIRED: &str =
    "TLS: the controller requires a client certificate (--ca, --cert, --key)";
const TLS_NOT_TLS: &str = "TLS: the peer does not speak TLS (a plaintext port? use http://)";

fn name_mismatch(server_name: Option<&str>) -> String {
    format!(
        "TLS: the controller's certificate does not name `{}` (certificate name mismatch; \
         set --server-name to a name it has)",
        server_name.unwrap_or("the host of --admin")
    )
}

fn tls(e: &rustls::Error, server_name: Option<&str>) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(C::UnknownIssuer) | E::InvalidCertificate(C::BadSignature) => {
            TLS_UNKNOWN_CA_THEM.into()
        }
        E::InvalidCertificate(C::NotValidForName)
        | E::InvalidCertificate(C::NotValidForNameContext { .. }) => name_mismatch(server_name),
        E::InvalidCertificate(C::Expired) | E::InvalidCertificate(C::ExpiredContext { .. }) => {
            "TLS: the controller's certificate has expired".into()
        }
        E::AlertReceived(A::UnknownCA) | E::AlertReceived(A::BadCertificate) => {
            TLS_UNKNOWN_CA_US.into()
        }
        E::AlertReceived(A::CertificateRequired) => TLS_CERT_REQUIRED.into(),
        E::AlertReceived(A::CertificateExpired) => {
            "TLS: the controller refused our client certificate: expired".into()
        }
        E::AlertReceived(a) => format!("TLS: the controller ended the handshake: {a:?}"),
        E::InvalidMessage(_) => TLS_NOT_TLS.into(),
        other => format!("TLS: {other}"),
    }
}
