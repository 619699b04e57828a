//! Validation of `[dnstap]`: the collector's socket (`unix:PATH` or `tcp:ADDRESS:PORT`),
//! the four message switches (each on unless set off) and the client sample rate.

use std::net::SocketAddr;
use std::path::PathBuf;

use toml::Spanned;

use super::error::{ConfigError, SourceText};
use super::raw::RawDnstap;
use super::types::{DnstapConfig, DnstapSocket};

/// `[dnstap]` as the server runs it.
pub(super) fn validate_dnstap(
    raw: Spanned<RawDnstap>,
    src: &SourceText<'_>,
) -> Result<DnstapConfig, ConfigError> {
    let span = raw.span();
    let raw = raw.into_inner();
    let socket = parse_socket(raw.socket.get_ref())
        .map_err(|e| src.error(raw.socket.span(), "dnstap.socket", e))?;
    let client_sample_rate = match raw.client_sample_rate {
        None => 1,
        Some(rate) => u32::try_from(*rate.get_ref())
            .ok()
            .filter(|&r| r >= 1)
            .ok_or_else(|| {
                src.error(
                    rate.span(),
                    "dnstap.client_sample_rate",
                    "one client query in N is sent: N is 1 (every one) or more",
                )
            })?,
    };
    let config = DnstapConfig {
        socket,
        client_query: raw.client_query.unwrap_or(true),
        client_response: raw.client_response.unwrap_or(true),
        forwarder_query: raw.forwarder_query.unwrap_or(true),
        forwarder_response: raw.forwarder_response.unwrap_or(true),
        client_sample_rate,
    };
    let any = config.client_query
        || config.client_response
        || config.forwarder_query
        || config.forwarder_response;
    if !any {
        return Err(src.error(
            span,
            "dnstap",
            "every message type is off: turn one on, or remove [dnstap]",
        ));
    }
    Ok(config)
}

/// `unix:/run/dnstap.sock` or `tcp:10.1.0.9:6000`.
fn parse_socket(text: &str) -> Result<DnstapSocket, String> {
    if let Some(path) = text.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!(
                "{text:?}: the socket's path must be absolute, as in \"unix:/run/dnstap.sock\""
            ));
        }
        return Ok(DnstapSocket::Unix(PathBuf::from(path)));
    }
    if let Some(addr) = text.strip_prefix("tcp:") {
        return addr.parse::<SocketAddr>().map(DnstapSocket::Tcp).map_err(|_| {
            format!("{text:?}: give an address and port, as in \"tcp:10.1.0.9:6000\" or \"tcp:[2001:db8::9]:6000\"")
        });
    }
    Err(format!(
        "{text:?}: a collector's socket is \"unix:/path/to/socket\" or \"tcp:ADDRESS:PORT\""
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets() {
        let ok = [
            (
                "unix:/run/dnstap.sock",
                DnstapSocket::Unix("/run/dnstap.sock".into()),
            ),
            (
                "tcp:10.1.0.9:6000",
                DnstapSocket::Tcp("10.1.0.9:6000".parse().unwrap()),
            ),
            (
                "tcp:[::1]:6000",
                DnstapSocket::Tcp("[::1]:6000".parse().unwrap()),
            ),
        ];
        for (text, want) in ok {
            assert_eq!(parse_socket(text), Ok(want), "{text}");
        }
        for bad in [
            "/run/dnstap.sock",
            "unix:run/dnstap.sock",
            "tcp:10.1.0.9",
            "tcp:host:6000",
            "udp:1.2.3.4:6000",
        ] {
            assert!(parse_socket(bad).is_err(), "{bad}");
        }
    }
}
