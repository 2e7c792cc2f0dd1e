//! Number normalisation: commons-lang `NumberUtils.createNumber` then a `DecimalFormat`
//! (at most three decimals, half-even).

// ---- numbers (normalisation) ----------------------------------------------------------------

/// Confluent normalises a number by parsing it with commons-lang `NumberUtils.createNumber`
/// and printing it with a `DecimalFormat` without grouping (at most three decimals, half-even).
/// Anything it cannot parse (`inf`, `nan`) stays as written.
pub(super) fn normalize_number(raw: &str) -> String {
    java_number(raw).unwrap_or_else(|| raw.to_owned())
}

fn java_number(raw: &str) -> Option<String> {
    let text = raw.trim();
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if body.is_empty() {
        return None;
    }
    let signed = |value: u128| {
        if negative && value != 0 {
            format!("-{value}")
        } else {
            value.to_string()
        }
    };
    if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        return u128::from_str_radix(hex, 16).ok().map(signed);
    }
    if body.bytes().all(|b| b.is_ascii_digit()) {
        let value = match body.strip_prefix('0') {
            Some(octal) if !octal.is_empty() => u128::from_str_radix(octal, 8).ok()?,
            _ => body.parse::<u128>().ok()?,
        };
        return Some(signed(value));
    }
    if !body
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        || !body.bytes().any(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mantissa = body.split(['e', 'E']).next().unwrap_or(body);
    let decimals = mantissa
        .split_once('.')
        .map_or(0, |(_, fraction)| fraction.len());
    let all_zeros = body.bytes().filter(u8::is_ascii_digit).all(|b| b == b'0');
    // createNumber prefers a float when it has at most seven decimals and is representable.
    let float = if decimals <= 7 {
        body.parse::<f32>()
            .ok()
            .filter(|value| value.is_finite() && (*value != 0.0 || all_zeros))
            .map(f64::from)
    } else {
        None
    };
    let value = match float {
        Some(value) => value,
        None => body.parse::<f64>().ok().filter(|value| value.is_finite())?,
    };
    let digits = round_half_even(&format!("{}", value.abs()), 3);
    Some(if negative {
        format!("-{digits}")
    } else {
        digits
    })
}

/// Rounds a plain decimal string to `places` fraction digits, half-even, and drops trailing
/// zeros (and the point when nothing is left after it).
pub(super) fn round_half_even(digits: &str, places: usize) -> String {
    let (integer, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let (keep, rest) = if fraction.len() > places {
        fraction.split_at(places)
    } else {
        (fraction, "")
    };
    let mut all: Vec<u8> = integer.bytes().chain(keep.bytes()).collect();
    let first = rest.bytes().next().unwrap_or(b'0');
    let tail_nonzero = rest.bytes().skip(1).any(|b| b != b'0');
    let last_odd = all.last().is_some_and(|b| b.wrapping_sub(b'0') % 2 == 1);
    if first > b'5' || (first == b'5' && (tail_nonzero || last_odd)) {
        let mut carry = true;
        for digit in all.iter_mut().rev() {
            if *digit == b'9' {
                *digit = b'0';
            } else {
                *digit += 1;
                carry = false;
                break;
            }
        }
        if carry {
            all.insert(0, b'1');
        }
    }
    let split = all.len().saturating_sub(keep.len());
    let fraction_part = all.split_off(split);
    let mut integer_part = String::from_utf8(all).unwrap_or_default();
    if integer_part.is_empty() {
        integer_part.push('0');
    }
    let fraction_text = String::from_utf8(fraction_part).unwrap_or_default();
    let fraction_text = fraction_text.trim_end_matches('0');
    if fraction_text.is_empty() {
        integer_part
    } else {
        format!("{integer_part}.{fraction_text}")
    }
}
