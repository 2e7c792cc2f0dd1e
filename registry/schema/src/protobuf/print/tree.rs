//! The element tree Confluent prints (square/wire's `ProtoFileElement`): files, messages,
//! fields, enums, services and option values as written.

// ---- the element tree (square/wire's `ProtoFileElement`) ------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FieldLabel {
    Optional,
    Required,
    Repeated,
}

impl FieldLabel {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            FieldLabel::Optional => "optional",
            FieldLabel::Required => "required",
            FieldLabel::Repeated => "repeated",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(super) struct FileElem {
    pub(super) syntax: Option<String>,
    pub(super) package: Option<String>,
    pub(super) imports: Vec<String>,
    pub(super) public_imports: Vec<String>,
    pub(super) weak_imports: Vec<String>,
    pub(super) options: Vec<OptionElem>,
    pub(super) messages: Vec<MessageElem>,
    pub(super) enums: Vec<EnumElem>,
    pub(super) extends: Vec<ExtendElem>,
    pub(super) services: Vec<ServiceElem>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct MessageElem {
    pub(super) name: String,
    pub(super) reserveds: Vec<Vec<RangeValue>>,
    pub(super) options: Vec<OptionElem>,
    pub(super) fields: Vec<FieldElem>,
    pub(super) oneofs: Vec<OneofElem>,
    pub(super) groups: Vec<GroupElem>,
    pub(super) extensions: Vec<ExtensionsElem>,
    pub(super) extends: Vec<ExtendElem>,
    pub(super) messages: Vec<MessageElem>,
    pub(super) enums: Vec<EnumElem>,
}

impl MessageElem {
    /// Confluent's test for a synthetic map entry: an option `map_entry = true`.
    pub(super) fn is_map_entry(&self) -> bool {
        self.options.iter().any(|option| {
            !option.parenthesized
                && option.name == "map_entry"
                && matches!(&option.value, OptValue::Bool(value) if value.eq_ignore_ascii_case("true"))
        })
    }
}

#[derive(Debug, Clone)]
pub(super) struct FieldElem {
    pub(super) label: Option<FieldLabel>,
    /// The type as written (`map<K, V>` for a map field written so).
    pub(super) ty: String,
    /// The type with fully-qualified names (`.pkg.Msg`, `map<K, .pkg.V>`).
    pub(super) normalized_ty: String,
    /// The normalised type is a map (the label is then not printed).
    pub(super) normalized_is_map: bool,
    pub(super) name: String,
    pub(super) tag: i32,
    pub(super) default: Option<OptValue>,
    /// Already escaped.
    pub(super) json_name: Option<String>,
    pub(super) options: Vec<OptionElem>,
}

#[derive(Debug, Clone)]
pub(super) struct OneofElem {
    pub(super) name: String,
    pub(super) options: Vec<OptionElem>,
    pub(super) fields: Vec<FieldElem>,
    pub(super) groups: Vec<GroupElem>,
}

#[derive(Debug, Clone)]
pub(super) struct GroupElem {
    pub(super) label: Option<FieldLabel>,
    pub(super) name: String,
    pub(super) tag: i32,
    pub(super) fields: Vec<FieldElem>,
}

#[derive(Debug, Clone)]
pub(super) struct ExtensionsElem {
    pub(super) values: Vec<RangeValue>,
    pub(super) options: Vec<OptionElem>,
}

#[derive(Debug, Clone)]
pub(super) struct ExtendElem {
    pub(super) name: String,
    pub(super) normalized_name: String,
    pub(super) fields: Vec<FieldElem>,
}

/// One value of a `reserved` or `extensions` statement (ranges are inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RangeValue {
    Int(i32),
    Range(i32, i32),
    Name(String),
}

impl RangeValue {
    pub(super) fn start(&self) -> i32 {
        match self {
            RangeValue::Int(value) | RangeValue::Range(value, _) => *value,
            RangeValue::Name(_) => i32::MAX,
        }
    }

    /// Java's `toString()` of the value (a Kotlin `IntRange` prints as `a..b`).
    pub(super) fn java_string(&self) -> String {
        match self {
            RangeValue::Int(value) => value.to_string(),
            RangeValue::Range(start, end) => format!("{start}..{end}"),
            RangeValue::Name(name) => name.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct EnumElem {
    pub(super) name: String,
    pub(super) reserveds: Vec<Vec<RangeValue>>,
    pub(super) options: Vec<OptionElem>,
    pub(super) constants: Vec<ConstantElem>,
}

#[derive(Debug, Clone)]
pub(super) struct ConstantElem {
    pub(super) name: String,
    pub(super) tag: i32,
    pub(super) options: Vec<OptionElem>,
}

#[derive(Debug, Clone)]
pub(super) struct ServiceElem {
    pub(super) name: String,
    pub(super) options: Vec<OptionElem>,
    pub(super) rpcs: Vec<RpcElem>,
}

#[derive(Debug, Clone)]
pub(super) struct RpcElem {
    pub(super) name: String,
    pub(super) request: String,
    pub(super) normalized_request: String,
    pub(super) request_streaming: bool,
    pub(super) response: String,
    pub(super) normalized_response: String,
    pub(super) response_streaming: bool,
    pub(super) options: Vec<OptionElem>,
}

/// wire's `OptionElement`: `name` is printed in parentheses when `parenthesized`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct OptionElem {
    pub(super) name: String,
    pub(super) parenthesized: bool,
    pub(super) value: OptValue,
}

/// An option value, by wire's `OptionElement.Kind`. Strings are kept escaped, numbers as
/// written.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum OptValue {
    Str(String),
    Bool(String),
    Enum(String),
    Number(String),
    Map(Vec<(String, OptValue)>),
    List(Vec<OptValue>),
    /// `(a).b = v`: the option `a` whose value is the sub-option `b = v`.
    Option(Box<OptionElem>),
}
