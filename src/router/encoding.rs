//! Client encodings, as the lexer sees them. pgsplit lexes query text as bytes; that is exact for every encoding in
//! which a byte below 0x80 is always the ASCII character it looks like (UTF-8, the LATIN and ISO 8859 families,
//! the Windows code pages, KOI8, the EUC family, MULE_INTERNAL, SQL_ASCII): the quotes, semicolons and keywords that
//! give a statement its shape are ASCII, and other bytes only ever sit inside words, strings and comments. The
//! client-only encodings SJIS, SHIFT_JIS_2004, BIG5, GBK, UHC, GB18030 and JOHAB are not like that: the second byte
//! of a character may be a backslash or a bracket, so text in them with any byte of 0x80 or more is not lexed.

/// What pgsplit may do with a client's non-ASCII text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientEncoding {
    /// UTF-8: text must be valid UTF-8 (the server refuses anything else).
    Utf8,
    /// Bytes below 0x80 are ASCII whatever surrounds them: lexed as bytes.
    AsciiSafe,
    /// A multi-byte character may hide ASCII-range bytes: text with non-ASCII bytes is not lexed.
    AsciiUnsafe,
}

impl ClientEncoding {
    /// The class of the encoding PostgreSQL calls `name`, compared as PostgreSQL compares encoding names: ASCII
    /// letters and digits only, case-insensitively (`UTF8`, `utf-8`, `Unicode`; `SJIS`, `Shift_JIS`, `win932`).
    pub fn named(name: &str) -> ClientEncoding {
        let clean: String = name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        match clean.as_str() {
            "utf8" | "unicode" => ClientEncoding::Utf8,
            "sjis" | "shiftjis" | "mskanji" | "win932" | "windows932" | "shiftjis2004" | "big5" | "win950"
            | "windows950" | "gbk" | "win936" | "windows936" | "uhc" | "win949" | "windows949" | "gb18030"
            | "johab" => ClientEncoding::AsciiUnsafe,
            _ => ClientEncoding::AsciiSafe,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_compared_as_postgres_compares_them() {
        for utf8 in ["UTF8", "utf-8", "Unicode", "utf_8"] {
            assert_eq!(ClientEncoding::named(utf8), ClientEncoding::Utf8, "{utf8}");
        }
        for unsafe_ in [
            "SJIS",
            "Shift_JIS",
            "win932",
            "BIG5",
            "GBK",
            "UHC",
            "GB18030",
            "JOHAB",
            "SHIFT_JIS_2004",
        ] {
            assert_eq!(ClientEncoding::named(unsafe_), ClientEncoding::AsciiUnsafe, "{unsafe_}");
        }
        for safe in [
            "LATIN9",
            "latin1",
            "EUC_JP",
            "WIN1252",
            "KOI8R",
            "SQL_ASCII",
            "ISO_8859_5",
            "MULE_INTERNAL",
        ] {
            assert_eq!(ClientEncoding::named(safe), ClientEncoding::AsciiSafe, "{safe}");
        }
    }
}
