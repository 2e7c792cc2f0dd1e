//! Client-certificate subjects to principals, as Kafka's `ssl.principal.mapping.rules`: an
//! ordered list of rules over the subject's distinguished name in RFC 2253 form (e.g.
//! `CN=orders-service,OU=payments,O=Acme`); the first that matches gives the principal's
//! name.
//!
//! - `RULE:<regex>/<replacement>/` — the regex must match the whole subject; the replacement
//!   may use its groups (`$1`, `${name}`). A trailing `L` or `U` after the last `/` lowercases or
//!   uppercases the result.
//! - `DEFAULT` — the whole subject is the name.
//!
//! With no rules, `DEFAULT` applies. A subject no rule matches has no principal (the
//! connection must then authenticate with SCRAM).

use std::fmt;
use std::str::FromStr;

use herald_auth::acl::Principal;
use regex::Regex;

/// Most mapping rules.
pub const PRINCIPAL_RULES_MAX: usize = 100;
/// Longest rule, in bytes.
pub const PRINCIPAL_RULE_BYTES_MAX: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrincipalRuleError {
    #[error("rule {rule:?}: expected RULE:<regex>/<replacement>/[L|U] or DEFAULT")]
    Form { rule: String },
    #[error("rule {rule:?}: invalid regex: {reason}")]
    Regex { rule: String, reason: String },
    #[error("more than {PRINCIPAL_RULES_MAX} rules")]
    TooMany,
    #[error("a rule is longer than {PRINCIPAL_RULE_BYTES_MAX} bytes")]
    TooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Keep,
    Lower,
    Upper,
}

/// One rule.
#[derive(Debug, Clone)]
pub enum PrincipalRule {
    Default,
    Rule {
        pattern: Regex,
        replacement: String,
        case: Case,
        text: String,
    },
}

impl fmt::Display for PrincipalRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrincipalRule::Default => f.write_str("DEFAULT"),
            PrincipalRule::Rule { text, .. } => f.write_str(text),
        }
    }
}

impl FromStr for PrincipalRule {
    type Err = PrincipalRuleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.len() > PRINCIPAL_RULE_BYTES_MAX {
            return Err(PrincipalRuleError::TooLong);
        }
        if text == "DEFAULT" {
            return Ok(PrincipalRule::Default);
        }
        let form = || PrincipalRuleError::Form {
            rule: text.to_owned(),
        };
        let body = text.strip_prefix("RULE:").ok_or_else(form)?;
        // The regex ends at the first unescaped '/'; the replacement at the next '/'.
        let (pattern, rest) = split_unescaped(body).ok_or_else(form)?;
        let (replacement, flags) = rest.rsplit_once('/').ok_or_else(form)?;
        let case = match flags {
            "" => Case::Keep,
            "L" => Case::Lower,
            "U" => Case::Upper,
            _ => return Err(form()),
        };
        let anchored = format!("^(?:{})$", pattern.replace("\\/", "/"));
        let pattern = Regex::new(&anchored).map_err(|e| PrincipalRuleError::Regex {
            rule: text.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(PrincipalRule::Rule {
            pattern,
            replacement: braced_groups(replacement),
            case,
            text: text.to_owned(),
        })
    }
}

/// `$1` as `${1}`: Java's (and so Kafka's) replacements end a group number at the first
/// non-digit, where the regex crate would read `$1_` as a group named `1_`.
fn braced_groups(replacement: &str) -> String {
    let mut out = String::with_capacity(replacement.len() + 4);
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('{');
            while let Some(digit) = chars.next_if(char::is_ascii_digit) {
                out.push(digit);
            }
            out.push('}');
        }
    }
    out
}

/// `text` split at its first '/' not preceded by a backslash.
fn split_unescaped(text: &str) -> Option<(&str, &str)> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'/' => return Some((&text[..i], &text[i + 1..])),
            _ => i += 1,
        }
    }
    None
}

/// The ordered rules.
#[derive(Debug, Clone, Default)]
pub struct PrincipalRules {
    rules: Vec<PrincipalRule>,
}

impl PrincipalRules {
    /// Parses each rule, in order.
    pub fn parse<S: AsRef<str>>(rules: &[S]) -> Result<Self, PrincipalRuleError> {
        if rules.len() > PRINCIPAL_RULES_MAX {
            return Err(PrincipalRuleError::TooMany);
        }
        Ok(Self {
            rules: rules
                .iter()
                .map(|rule| rule.as_ref().parse())
                .collect::<Result<_, _>>()?,
        })
    }

    /// The principal of a certificate whose subject is `subject`, if a rule gives one.
    pub fn principal(&self, subject: &str) -> Option<Principal> {
        let default = [PrincipalRule::Default];
        let rules = if self.rules.is_empty() {
            &default[..]
        } else {
            &self.rules[..]
        };
        rules.iter().find_map(|rule| {
            let name = match rule {
                PrincipalRule::Default => subject.to_owned(),
                PrincipalRule::Rule {
                    pattern,
                    replacement,
                    case,
                    ..
                } => {
                    let captures = pattern.captures(subject)?;
                    let mut name = String::new();
                    captures.expand(replacement, &mut name);
                    match case {
                        Case::Keep => name,
                        Case::Lower => name.to_lowercase(),
                        Case::Upper => name.to_uppercase(),
                    }
                }
            };
            Principal::user(name).ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(rules: &[&str], subject: &str) -> Option<String> {
        PrincipalRules::parse(rules)
            .expect("rules")
            .principal(subject)
            .map(|p| p.name().to_owned())
    }

    #[test]
    fn the_first_matching_rule_names_the_principal() {
        let rules = [
            "RULE:^CN=([^,]+),OU=ServiceUsers,.*$/$1/L",
            "RULE:^CN=([^,]+),.*$/ext-$1/",
            "DEFAULT",
        ];
        assert_eq!(
            name(&rules, "CN=Orders,OU=ServiceUsers,O=Acme").as_deref(),
            Some("orders")
        );
        assert_eq!(name(&rules, "CN=Bob,O=Acme").as_deref(), Some("ext-Bob"));
        assert_eq!(name(&rules, "O=Acme").as_deref(), Some("O=Acme"));
        // As in Kafka, `$1_$2` is group 1, an underscore, group 2.
        assert_eq!(
            name(
                &["RULE:^CN=([a-z]+),OU=([a-z]+)$/$1_$2/"],
                "CN=orders,OU=payments"
            )
            .as_deref(),
            Some("orders_payments")
        );
    }

    #[test]
    fn no_rules_is_the_default_and_no_match_is_no_principal() {
        assert_eq!(name(&[], "CN=a,O=b").as_deref(), Some("CN=a,O=b"));
        assert_eq!(name(&["RULE:^CN=(.*)$/$1/"], "O=b"), None);
        // The regex must match the whole subject.
        assert_eq!(name(&["RULE:CN=(a)/$1/"], "CN=a,O=b"), None);
    }

    #[test]
    fn malformed_rules_are_refused_with_the_rule() {
        for rule in ["RULE:abc", "RULE:a/b/X", "KAFKA", "RULE:(/x/"] {
            let error = PrincipalRules::parse(&[rule]).err().map(|e| e.to_string());
            assert!(
                error.as_deref().is_some_and(|e| e.contains(rule)),
                "{rule}: {error:?}"
            );
        }
        // An escaped slash belongs to the regex.
        assert_eq!(
            name(&["RULE:^CN=a\\/(b)$/$1/"], "CN=a/b").as_deref(),
            Some("b")
        );
    }
}
