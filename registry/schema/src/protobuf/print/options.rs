//! Option values when normalising: `ProtobufSchema.transform` (an option of kind OPTION
//! becomes a map) and the merging of repeated settings of one non-repeated custom option.

use prost_reflect::{Cardinality, ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor};

use super::tree::{OptValue, OptionElem};

/// `ProtobufSchema.transform`: an option of kind OPTION becomes a map.
pub(super) fn transform(option: OptionElem) -> OptionElem {
    match option.value {
        OptValue::Option(inner) => OptionElem {
            name: option.name,
            parenthesized: option.parenthesized,
            value: OptValue::Map(transform_option_map(*inner)),
        },
        value => OptionElem {
            name: option.name,
            parenthesized: option.parenthesized,
            value,
        },
    }
}

fn transform_option_map(option: OptionElem) -> Vec<(String, OptValue)> {
    let key = match option
        .name
        .strip_prefix('(')
        .and_then(|name| name.strip_suffix(')'))
    {
        Some(extension) => format!("[{extension}]"),
        None => option.name,
    };
    let value = match option.value {
        OptValue::Option(inner) => OptValue::Map(transform_option_map(*inner)),
        value => value,
    };
    vec![(key, value)]
}

pub(super) fn merge_option(
    extension: &ExtensionDescriptor,
    existing: OptionElem,
    replacement: OptionElem,
) -> OptionElem {
    let replacement = transform(replacement);
    match (&existing.value, &replacement.value) {
        (OptValue::Map(existing_map), OptValue::Map(replacement_map)) => {
            let container = match extension.kind() {
                Kind::Message(message) => Some(message),
                _ => None,
            };
            let merged = merge_option_maps(container.as_ref(), existing_map, replacement_map);
            OptionElem {
                name: replacement.name,
                parenthesized: replacement.parenthesized,
                value: OptValue::Map(merged),
            }
        }
        _ => replacement,
    }
}

fn merge_option_maps(
    container: Option<&MessageDescriptor>,
    existing: &[(String, OptValue)],
    replacement: &[(String, OptValue)],
) -> Vec<(String, OptValue)> {
    let mut merged = existing.to_vec();
    for (key, value) in replacement {
        let field = container.and_then(|message| message.get_field_by_name(key));
        match merged.iter_mut().find(|(known, _)| known == key) {
            Some((_, slot)) => {
                let previous = std::mem::replace(slot, OptValue::List(Vec::new()));
                *slot = merge_option_values(field.as_ref(), previous, value.clone());
            }
            None => merged.push((key.clone(), value.clone())),
        }
    }
    merged
}

/// Two values set for one key: messages of a singular field merge, a singular scalar takes the
/// last value, a repeated field (or one that cannot be resolved) accumulates distinct values.
fn merge_option_values(
    field: Option<&FieldDescriptor>,
    first: OptValue,
    second: OptValue,
) -> OptValue {
    if let Some(field) = field {
        let singular = field.cardinality() != Cardinality::Repeated || field.is_map();
        if singular {
            if let (OptValue::Map(a), OptValue::Map(b), Kind::Message(message)) =
                (&first, &second, field.kind())
            {
                if !field.is_map() {
                    return OptValue::Map(merge_option_maps(Some(&message), a, b));
                }
            }
            return second;
        }
    }
    let mut items: Vec<OptValue> = Vec::new();
    for value in [first, second] {
        let values = match value {
            OptValue::List(values) => values,
            other => vec![other],
        };
        for value in values {
            if !items.contains(&value) {
                items.push(value);
            }
        }
    }
    OptValue::List(items)
}
