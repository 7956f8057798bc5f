//! Geo-blocking (`[geo]`): MaxMind country and ASN databases compiled to prefixes.
