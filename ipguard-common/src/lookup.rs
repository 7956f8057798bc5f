//! The list lookup, written once: the XDP program runs it over its maps, the daemon's
//! in-memory store over hash maps, and the host tests below over a plain model. A change
//! to the table layout changes this file and [`Tables`]' implementations, nothing else.
//!
//! IPv4: one load of the address's /24 slot ([`Tables::slot`]); only if the slot has
//! [`SLOT_HOSTS`] a lookup of the address itself ([`Tables::host`]).
//!
//! IPv6: if the address's /24 region is marked ([`Tables::region_word`]), the anchor of its
//! /32 ([`Tables::anchor`]), then one lookup per prefix length present under it, longest
//! first ([`Tables::long`]); the short-prefix trie
//! ([`Tables::lpm`]) only for an overflowing anchor or when the table flags say it holds
//! prefixes shorter than /32.
//!
//! Everything is `#[inline(always)]` and the loops are bounded by constants: the verifier
//! sees one straight function per program.

use crate::{
    v6_region_bit, ListCode, ScopeHint, ScopeKey, Tbl24Slot, V6Anchor, V6LongKey, ANCHOR_OVERFLOW,
    ANCHOR_OWN, CODE_LIST, LIST_NONE, SCOPE_SHIFT, SLOT_CODE, SLOT_HOSTS, TABLE_FLAG_V6_SHORT,
    V6_ANCHOR_LENS,
};

/// Read access to the list tables, one call per map lookup.
pub trait Tables {
    /// The slot of the /24 `s24` (the address shifted right by 8); 0 if out of range.
    fn slot(&self, s24: u32) -> Tbl24Slot;
    /// The code of one IPv4 address (network byte order) in the host map.
    fn host(&self, addr: &[u8; 4]) -> Option<ListCode>;
    /// Word `w` of the IPv6 region bitmap (see [`crate::MAP_V6_REGIONS`]). The XDP program
    /// reads a word it cannot load as all ones (the anchor is then looked up).
    fn region_word(&self, w: u32) -> u64;
    /// The anchor of one IPv6 /32, by its first four bytes.
    fn anchor(&self, top: &[u8; 4]) -> Option<V6Anchor>;
    /// The code of one IPv6 prefix of /33 or longer.
    fn long(&self, key: &V6LongKey) -> Option<ListCode>;
    /// The table flags (`TABLE_FLAG_*`).
    fn flags(&self) -> u32;
    /// Longest-prefix match of the address in the short-prefix trie; [`LIST_NONE`] if none.
    fn lpm(&self, addr: &[u8; 16]) -> ListCode;
    /// A scope group's verdict for one protocol and port (see [`scoped`]).
    fn scope(&self, key: &ScopeKey) -> Option<ListCode>;
    /// What a scope group has cells for; `None` reads as none.
    fn hint(&self, group: u32) -> Option<ScopeHint>;
}

/// The table code of the longest prefix holding the IPv4 address `src` (network byte
/// order), [`LIST_NONE`] if none does: its `LIST_*` code and scope group (resolve the
/// group with [`scoped`]).
#[inline(always)]
pub fn lookup_v4<T: Tables + ?Sized>(t: &T, src: [u8; 4]) -> ListCode {
    let slot = t.slot(u32::from_be_bytes(src) >> 8);
    if slot & SLOT_HOSTS != 0 {
        if let Some(code) = t.host(&src) {
            return code;
        }
    }
    (slot & SLOT_CODE) as ListCode
}

/// Like [`lookup_v4`] for an IPv6 address (network byte order).
#[inline(always)]
pub fn lookup_v6<T: Tables + ?Sized>(t: &T, src: &[u8; 16]) -> ListCode {
    let hi = u64::from_be_bytes([
        src[0], src[1], src[2], src[3], src[4], src[5], src[6], src[7],
    ]);
    let lo = u64::from_be_bytes([
        src[8], src[9], src[10], src[11], src[12], src[13], src[14], src[15],
    ]);
    lookup_v6_words(t, hi, lo)
}

/// [`lookup_v6`] of the address whose first and last eight bytes are the big-endian `hi`
/// and `lo`: the XDP program reads them as two words and never assembles a byte array.
#[inline(always)]
pub fn lookup_v6_words<T: Tables + ?Sized>(t: &T, hi: u64, lo: u64) -> ListCode {
    let top = (hi >> 32) as u32;
    let (word, bit) = v6_region_bit(top);
    let anchor = if t.region_word(word) & bit != 0 {
        t.anchor(&top.to_be_bytes())
    } else {
        None
    };
    if let Some(anchor) = anchor {
        if anchor.flags & ANCHOR_OVERFLOW != 0 {
            return t.lpm(&v6_bytes(hi, lo));
        }
        for i in 0..V6_ANCHOR_LENS {
            if i >= anchor.n_lens as usize {
                break;
            }
            let key = V6LongKey::new(hi, lo, anchor.lens[i] as u32);
            if let Some(code) = t.long(&key) {
                return code;
            }
        }
        if anchor.flags & ANCHOR_OWN != 0 {
            return anchor.own_code();
        }
    }
    if t.flags() & TABLE_FLAG_V6_SHORT != 0 {
        return t.lpm(&v6_bytes(hi, lo));
    }
    LIST_NONE
}

/// The sixteen network-order bytes of the address `hi`:`lo`.
#[inline(always)]
fn v6_bytes(hi: u64, lo: u64) -> [u8; 16] {
    let (h, l) = (hi.to_be_bytes(), lo.to_be_bytes());
    [
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], l[0], l[1], l[2], l[3], l[4], l[5], l[6],
        l[7],
    ]
}

/// The `LIST_*` code that decides a packet of protocol `proto` to port `dport` (0: none or
/// not read) whose source's table code is `code`: without a scope group, the code itself;
/// with one, the group's verdict for the port, else for the protocol's other ports (port
/// 0), else the prefix's own list code. The group's hint spares the lookups of cells it
/// cannot have; a prefix without a group costs nothing.
#[inline(always)]
pub fn scoped<T: Tables + ?Sized>(t: &T, code: ListCode, proto: u8, dport: u16) -> ListCode {
    let group = code >> SCOPE_SHIFT;
    if group == 0 {
        return code;
    }
    let Some(hint) = t.hint(group) else {
        return code & CODE_LIST;
    };
    let mut key = ScopeKey::new(group as u16, proto, dport);
    if dport != 0 && hint.may_have_port(proto, dport) {
        if let Some(c) = t.scope(&key) {
            return c;
        }
    }
    if hint.other & ScopeHint::other_bit(proto) != 0 {
        key.port = 0;
        if let Some(c) = t.scope(&key) {
            return c;
        }
    }
    code & CODE_LIST
}

#[cfg(test)]
mod tests {
    //! The lookup over a hand-built model of the tables, host-side (the XDP program and
    //! the daemon's memory store run this same code).
    extern crate std;

    use std::{collections::BTreeMap, vec::Vec};

    use super::*;
    use crate::{LIST_BLACKLIST, LIST_GRAYLIST, LIST_WHITELIST, V6_ANCHOR_LENS};

    #[derive(Default)]
    struct Model {
        slots: BTreeMap<u32, Tbl24Slot>,
        hosts: BTreeMap<[u8; 4], ListCode>,
        anchors: BTreeMap<[u8; 4], V6Anchor>,
        longs: BTreeMap<V6LongKey, ListCode>,
        flags: u32,
        /// (address, length, code): matched naively, longest first.
        lpm: Vec<(u128, u32, ListCode)>,
        scopes: BTreeMap<ScopeKey, ListCode>,
        hints: BTreeMap<u32, ScopeHint>,
        /// IPv6 regions left unmarked although anchors lie in them.
        unmarked: std::collections::BTreeSet<u32>,
    }

    impl Tables for Model {
        fn slot(&self, s24: u32) -> Tbl24Slot {
            self.slots.get(&s24).copied().unwrap_or(0)
        }
        fn host(&self, addr: &[u8; 4]) -> Option<ListCode> {
            self.hosts.get(addr).copied()
        }
        fn region_word(&self, w: u32) -> u64 {
            // Marked exactly where anchors are, as the daemon's layout keeps it (unless a
            // test unmarks a region).
            let mut word = 0;
            for top in self.anchors.keys() {
                let (at, bit) = v6_region_bit(u32::from_be_bytes(*top));
                if at == w && !self.unmarked.contains(&(at * 64 + bit.trailing_zeros())) {
                    word |= bit;
                }
            }
            word
        }
        fn anchor(&self, top: &[u8; 4]) -> Option<V6Anchor> {
            self.anchors.get(top).copied()
        }
        fn long(&self, key: &V6LongKey) -> Option<ListCode> {
            self.longs.get(key).copied()
        }
        fn flags(&self) -> u32 {
            self.flags
        }
        fn lpm(&self, addr: &[u8; 16]) -> ListCode {
            let a = u128::from_be_bytes(*addr);
            self.lpm
                .iter()
                .filter(|(net, len, _)| *len == 0 || (a ^ net) >> (128 - len) == 0)
                .max_by_key(|(_, len, _)| *len)
                .map_or(LIST_NONE, |(_, _, code)| *code)
        }
        fn scope(&self, key: &ScopeKey) -> Option<ListCode> {
            self.scopes.get(key).copied()
        }
        fn hint(&self, group: u32) -> Option<ScopeHint> {
            self.hints.get(&group).copied()
        }
    }

    #[test]
    fn a_word_built_scope_key_is_the_field_built_one() {
        for (group, proto, port) in [(0, 0, 0), (3, 6, 22), (u16::MAX, u8::MAX, u16::MAX)] {
            let fields = ScopeKey {
                group,
                port,
                proto,
                _pad: [0; 3],
            };
            assert_eq!(ScopeKey::new(group, proto, port), fields);
        }
    }

    #[test]
    fn a_scope_group_decides_by_port_then_by_protocol_then_falls_back() {
        use crate::{LIST_RULE_ALLOW, LIST_RULE_DENY, PROTO_TCP, PROTO_UDP};
        let mut m = Model::default();
        let key = |port, proto| ScopeKey {
            group: 3,
            port,
            proto,
            _pad: [0; 3],
        };
        // Group 3: tcp/22 allowed, other TCP denied; UDP untouched.
        m.scopes.insert(key(22, PROTO_TCP), LIST_RULE_ALLOW);
        m.scopes.insert(key(0, PROTO_TCP), LIST_RULE_DENY);
        // Without a hint the cells are not looked at.
        let c = LIST_BLACKLIST | (3 << SCOPE_SHIFT);
        assert_eq!(scoped(&m, c, PROTO_TCP, 22), LIST_BLACKLIST);
        let mut hint = ScopeHint::default();
        hint.add(PROTO_TCP, 22);
        hint.add(PROTO_TCP, 0);
        assert!(hint.may_have_port(PROTO_TCP, 22));
        assert!(!hint.may_have_port(PROTO_TCP, 23));
        assert!(!hint.may_have_port(PROTO_UDP, 22));
        m.hints.insert(3, hint);
        let code = LIST_BLACKLIST | (3 << SCOPE_SHIFT);
        m.slots.insert(0xc0_00_02, code as Tbl24Slot);
        let c = lookup_v4(&m, [192, 0, 2, 9]);
        assert_eq!(c, code);
        assert_eq!(scoped(&m, c, PROTO_TCP, 22), LIST_RULE_ALLOW);
        assert_eq!(scoped(&m, c, PROTO_TCP, 80), LIST_RULE_DENY);
        assert_eq!(scoped(&m, c, PROTO_TCP, 0), LIST_RULE_DENY);
        assert_eq!(scoped(&m, c, PROTO_UDP, 22), LIST_BLACKLIST);
        // No group: the code as it is, whatever the scopes hold.
        assert_eq!(scoped(&m, LIST_GRAYLIST, PROTO_TCP, 22), LIST_GRAYLIST);
        // The widest group fits a slot beside the hosts flag, and an anchor's own code.
        let widest = crate::LIST_MONITOR_RULE | (crate::MAX_SCOPE_GROUP << SCOPE_SHIFT);
        assert_eq!(widest as Tbl24Slot & SLOT_HOSTS, 0);
        assert_eq!(widest as u16 as ListCode, widest);
    }

    fn v6(s: &str) -> [u8; 16] {
        s.parse::<std::net::Ipv6Addr>().unwrap().octets()
    }

    fn halves(a: [u8; 16]) -> (u64, u64) {
        let x = u128::from_be_bytes(a);
        ((x >> 64) as u64, x as u64)
    }

    #[test]
    fn v4_slot_decides_unless_the_slot_has_hosts() {
        let mut m = Model::default();
        m.slots.insert(0xc0_00_02, LIST_BLACKLIST as Tbl24Slot);
        assert_eq!(lookup_v4(&m, [192, 0, 2, 9]), LIST_BLACKLIST);
        assert_eq!(lookup_v4(&m, [192, 0, 3, 9]), LIST_NONE);
        // A host entry is only read when the slot says so.
        m.hosts.insert([192, 0, 2, 9], LIST_WHITELIST);
        assert_eq!(lookup_v4(&m, [192, 0, 2, 9]), LIST_BLACKLIST);
        m.slots
            .insert(0xc0_00_02, LIST_BLACKLIST as Tbl24Slot | SLOT_HOSTS);
        assert_eq!(lookup_v4(&m, [192, 0, 2, 9]), LIST_WHITELIST);
        assert_eq!(lookup_v4(&m, [192, 0, 2, 10]), LIST_BLACKLIST);
    }

    #[test]
    fn every_code_fits_a_slot() {
        let mut m = Model::default();
        for code in 0..=crate::LIST_MONITOR_RULE {
            m.slots.insert(0xc0_00_02, code as Tbl24Slot | SLOT_HOSTS);
            assert_eq!(lookup_v4(&m, [192, 0, 2, 9]), code);
            // monitored and enforced are inverses on the codes that are not monitored
            // already (a monitored code maps back to the code it stands for).
            assert_eq!(
                crate::enforced(crate::monitored(code)),
                crate::enforced(code)
            );
            assert_eq!(
                crate::monitored(crate::enforced(code)),
                crate::monitored(code)
            );
        }
    }

    #[test]
    fn v6_lengths_are_tried_longest_first_then_the_anchor_itself() {
        let mut m = Model::default();
        let a = v6("2001:db8:1:2::5");
        let (hi, lo) = halves(a);
        let mut anchor = V6Anchor {
            flags: ANCHOR_OWN,
            own: LIST_GRAYLIST as u8,
            n_lens: 2,
            ..Default::default()
        };
        anchor.lens[..2].copy_from_slice(&[128, 48]);
        m.anchors.insert([0x20, 0x01, 0x0d, 0xb8], anchor);
        m.longs.insert(V6LongKey::new(hi, lo, 48), LIST_BLACKLIST);
        assert_eq!(lookup_v6(&m, &a), LIST_BLACKLIST);
        m.longs.insert(V6LongKey::new(hi, lo, 128), LIST_WHITELIST);
        assert_eq!(lookup_v6(&m, &a), LIST_WHITELIST);
        // Another /48 of the same /32: the anchor's own verdict.
        assert_eq!(lookup_v6(&m, &v6("2001:db8:9::1")), LIST_GRAYLIST);
        // Another /32: nothing (no short prefixes).
        assert_eq!(lookup_v6(&m, &v6("2001:db9::1")), LIST_NONE);
    }

    #[test]
    fn v6_anchors_are_read_only_in_marked_regions() {
        let mut m = Model::default();
        let a = v6("2001:db8::1");
        let anchor = V6Anchor {
            flags: ANCHOR_OWN,
            own: LIST_BLACKLIST as u8,
            ..Default::default()
        };
        m.anchors.insert([0x20, 0x01, 0x0d, 0xb8], anchor);
        assert_eq!(lookup_v6(&m, &a), LIST_BLACKLIST);
        // The region 2001:d00::/24 unmarked: the anchor is not looked at (which is why the
        // layout marks a region before it writes the region's first anchor, and clears it
        // only after the last one is gone).
        m.unmarked.insert(0x20010d);
        assert_eq!(lookup_v6(&m, &a), LIST_NONE);
        // The short-prefix trie still answers outside marked regions.
        m.flags = TABLE_FLAG_V6_SHORT;
        m.lpm
            .push((u128::from_be_bytes(v6("2001::")), 16, LIST_GRAYLIST));
        assert_eq!(lookup_v6(&m, &a), LIST_GRAYLIST);
    }

    #[test]
    fn v6_lengths_past_n_lens_are_ignored() {
        let mut m = Model::default();
        let a = v6("2001:db8::1");
        let (hi, lo) = halves(a);
        let mut anchor = V6Anchor {
            n_lens: 1,
            ..Default::default()
        };
        anchor.lens[..2].copy_from_slice(&[128, 64]);
        m.anchors.insert([0x20, 0x01, 0x0d, 0xb8], anchor);
        m.longs.insert(V6LongKey::new(hi, lo, 64), LIST_BLACKLIST);
        assert_eq!(lookup_v6(&m, &a), LIST_NONE);
        anchor.n_lens = V6_ANCHOR_LENS as u8;
        m.anchors.insert([0x20, 0x01, 0x0d, 0xb8], anchor);
        assert_eq!(lookup_v6(&m, &a), LIST_BLACKLIST);
    }

    #[test]
    fn v6_trie_serves_overflowing_anchors_and_short_prefixes() {
        let mut m = Model::default();
        let a = v6("2001:db8::1");
        m.lpm
            .push((u128::from_be_bytes(v6("2001:db8::")), 40, LIST_BLACKLIST));
        m.lpm
            .push((u128::from_be_bytes(v6("2000::")), 3, LIST_GRAYLIST));
        // The trie is not read unless a flag or an anchor says so.
        assert_eq!(lookup_v6(&m, &a), LIST_NONE);
        m.flags = TABLE_FLAG_V6_SHORT;
        assert_eq!(lookup_v6(&m, &a), LIST_BLACKLIST);
        assert_eq!(lookup_v6(&m, &v6("2400::1")), LIST_GRAYLIST);
        m.flags = 0;
        m.anchors.insert(
            [0x20, 0x01, 0x0d, 0xb8],
            V6Anchor {
                flags: ANCHOR_OVERFLOW,
                ..Default::default()
            },
        );
        assert_eq!(lookup_v6(&m, &a), LIST_BLACKLIST);
    }
}
