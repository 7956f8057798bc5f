//! Enums whose variants have fixed names, as operators write them in the config file, the
//! API, the CLI and the logs.

/// A name that is none of an enum's variants. Worded like serde's message, so the config
/// file, the API and the command line report a bad name the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown variant `{given}`, expected one of {expected}")]
pub struct UnknownVariant {
    /// The text as given.
    pub given: String,
    /// The choices, each in backquotes: "`syn`, `packets`, `bytes`".
    pub expected: String,
}

/// Declares a fieldless enum with a fixed name per variant, and with it `ALL` (declaration
/// order, which is also the order error messages list the choices in), `as_str`,
/// `Display`, and `FromStr` (exact names only; the error is an [`UnknownVariant`]).
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: [$name; 0 $(+ named_enum!(@one $variant))+] = [$($name::$variant),+];

            /// The name operators write.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::model::UnknownVariant;

            fn from_str(s: &str) -> ::std::result::Result<Self, Self::Err> {
                Self::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| $crate::model::UnknownVariant {
                        given: s.to_owned(),
                        expected: Self::ALL
                            .iter()
                            .map(|v| format!("`{}`", v.as_str()))
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            }
        }
    };
    (@one $variant:ident) => {
        1
    };
}

pub(crate) use named_enum;

#[cfg(test)]
mod tests {
    named_enum! {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Fruit {
            Apple = "apple",
            Pear = "pear",
        }
    }

    #[test]
    fn names_round_trip_and_errors_list_the_choices() {
        for f in Fruit::ALL {
            assert_eq!(f.as_str().parse::<Fruit>(), Ok(f));
            assert_eq!(f.to_string(), f.as_str());
        }
        assert_eq!(
            "Apple".parse::<Fruit>().unwrap_err().to_string(),
            "unknown variant `Apple`, expected one of `apple`, `pear`"
        );
    }
}
