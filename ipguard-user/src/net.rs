//! Parsing of IP addresses and networks as an operator writes them: in the config's
//! lists, on the command line and in REST API requests.
//!
//! Stricter than `ipnet`'s own `FromStr` on purpose: a network with host bits set
//! (`198.51.100.7/24`) is almost always a typo for either the host or the network,
//! and silently truncating it would block (or whitelist) something else than meant.

use std::net::IpAddr;

use ipnet::IpNet;

/// Why a string is not an IP address or network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// The text starts or ends with whitespace. Rejected rather than trimmed so that
    /// what is stored is exactly what was written.
    #[error("{given:?} has leading or trailing whitespace; write the address without it")]
    Whitespace {
        /// The text as given.
        given: String,
    },
    /// Neither an IP address nor `address/prefix-length`.
    #[error("{given:?} is not a valid IP address or CIDR")]
    Invalid {
        /// The text as given.
        given: String,
    },
    /// The prefix length is longer than the address (over 32 for IPv4, 128 for IPv6).
    #[error("{given:?}: the prefix length must be at most {max} for an {}", family(*.max))]
    PrefixTooLong {
        /// The text as given.
        given: String,
        /// The longest prefix the address family allows.
        max: u8,
    },
    /// The address has bits set past the prefix length.
    #[error("{given} has host bits set; did you mean {network}?")]
    HostBitsSet {
        /// The text as given.
        given: String,
        /// The network the prefix length selects (host bits cleared).
        network: IpNet,
    },
}

fn family(max_prefix_len: u8) -> &'static str {
    if max_prefix_len == 32 {
        "IPv4 address"
    } else {
        "IPv6 address"
    }
}

/// Parses "198.51.100.7", "198.51.100.0/24", "2001:db8::/32", "::1": bare address = host prefix.
///
/// The prefix length is plain decimal digits; a network must have its host bits clear.
pub fn parse_net(s: &str) -> Result<IpNet, NetError> {
    let net = parse_position(s)?;
    let network = net.trunc();
    if network != net {
        return Err(NetError::HostBitsSet {
            given: crate::model::excerpt(s),
            network,
        });
    }
    Ok(net)
}

/// Like [`parse_net`], but host bits may be set: for a position in the ordering of
/// prefixes (a page cursor), where `198.51.100.7/24` is as meaningful as any other.
pub fn parse_position(s: &str) -> Result<IpNet, NetError> {
    let invalid = || NetError::Invalid {
        given: crate::model::excerpt(s),
    };
    if s.trim() != s {
        return Err(NetError::Whitespace {
            given: crate::model::excerpt(s),
        });
    }
    let Some((addr, len)) = s.split_once('/') else {
        let addr: IpAddr = s.parse().map_err(|_| invalid())?;
        return Ok(IpNet::from(addr));
    };
    let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
    // `u8::from_str` accepts a leading `+`; a prefix length is digits only.
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let max = match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let too_long = || NetError::PrefixTooLong {
        given: crate::model::excerpt(s),
        max,
    };
    // Only digits remain, so a parse failure means the number does not fit a u8.
    let len: u8 = len.parse().map_err(|_| too_long())?;
    IpNet::new(addr, len).map_err(|_| too_long())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn err(s: &str) -> String {
        parse_net(s).unwrap_err().to_string()
    }

    #[test]
    fn bare_addresses_are_host_prefixes() {
        let v4 = parse_net("198.51.100.7").unwrap();
        assert_eq!(v4, net("198.51.100.7/32"));
        assert_eq!(v4.prefix_len(), 32);
        let v6 = parse_net("::1").unwrap();
        assert_eq!(v6, net("::1/128"));
        assert_eq!(v6.prefix_len(), 128);
    }

    #[test]
    fn networks_parse_as_written() {
        assert_eq!(
            parse_net("198.51.100.0/24").unwrap(),
            net("198.51.100.0/24")
        );
        assert_eq!(parse_net("2001:db8::/32").unwrap(), net("2001:db8::/32"));
        assert_eq!(parse_net("0.0.0.0/0").unwrap(), net("0.0.0.0/0"));
        assert_eq!(parse_net("::/0").unwrap(), net("::/0"));
        assert_eq!(parse_net("10.1.2.3/32").unwrap(), net("10.1.2.3/32"));
        // Upper-case hex is valid IPv6 and comes back in canonical form.
        assert_eq!(
            parse_net("2001:DB8:BAD::/48").unwrap().to_string(),
            "2001:db8:bad::/48"
        );
    }

    #[test]
    fn invalid_text_is_quoted_in_the_error() {
        assert_eq!(
            err("not-an-ip"),
            r#""not-an-ip" is not a valid IP address or CIDR"#
        );
        assert_eq!(
            parse_net("198.51.100.300"),
            Err(NetError::Invalid {
                given: "198.51.100.300".into()
            })
        );
        for bad in [
            "",
            "/24",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-8",
            "10.0.0.0/8/8",
            "10.0.0.0/x",
            "10.0.0.0 /8",
            "10.0.0.0/ 8",
            "fe80::1%eth0",
            "010.0.0.1",
        ] {
            assert_eq!(
                parse_net(bad),
                Err(NetError::Invalid { given: bad.into() }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn surrounding_whitespace_is_rejected_not_trimmed() {
        assert_eq!(
            err(" 10.0.0.1"),
            r#"" 10.0.0.1" has leading or trailing whitespace; write the address without it"#
        );
        for bad in ["10.0.0.0/8 ", "\t::1", "::1\n"] {
            assert_eq!(
                parse_net(bad),
                Err(NetError::Whitespace { given: bad.into() }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn host_bits_error_suggests_the_network() {
        assert_eq!(
            err("198.51.100.7/24"),
            "198.51.100.7/24 has host bits set; did you mean 198.51.100.0/24?"
        );
        assert_eq!(
            parse_net("2001:db8:bad::1/48"),
            Err(NetError::HostBitsSet {
                given: "2001:db8:bad::1/48".into(),
                network: net("2001:db8:bad::/48"),
            })
        );
        assert_eq!(
            err("1.2.3.4/0"),
            "1.2.3.4/0 has host bits set; did you mean 0.0.0.0/0?"
        );
    }

    #[test]
    fn prefix_length_out_of_range() {
        assert_eq!(
            err("10.0.0.0/33"),
            r#""10.0.0.0/33": the prefix length must be at most 32 for an IPv4 address"#
        );
        assert_eq!(
            err("2001:db8::/129"),
            r#""2001:db8::/129": the prefix length must be at most 128 for an IPv6 address"#
        );
        // Too big for any integer type the parser could pick is still "too long".
        assert_eq!(
            parse_net("10.0.0.0/99999999999999999999"),
            Err(NetError::PrefixTooLong {
                given: "10.0.0.0/99999999999999999999".into(),
                max: 32
            })
        );
    }
}
