//! Blocklist feeds (`[[feed]]`): fetching, parsing, hygiene and held updates.
