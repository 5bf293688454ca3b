//! What an API dialect is: a pure translator. It names its wire request type, translates it
//! into a `ChatRequest` (`to_chat`), renders the chat's items as SSE events or one final
//! object (its `Reply`), and has its own error shape (`From<Failure>`). The request flow
//! itself (body, parse, images, owner, session or pool, metrics, rendering) exists once, in
//! `http::endpoint`.

use axum::response::IntoResponse;
use serde::de::DeserializeOwned;

use crate::chat::{ChatEnd, ChatItem, ChatRequest};
use crate::domain::{ContentBlock, IMAGE_MEDIA_TYPES, OwnerKey};
use crate::failure::Failure;
pub use crate::tagged::PathStyle;
use crate::tagged::{format_path, located};

/// An API dialect, mounted with one line in `http::app`.
pub trait Dialect: Send + Sync + 'static {
    /// The wire request.
    type Request: DeserializeOwned + Send;
    /// How this dialect answers a request, item by item.
    type Reply: Reply;
    /// The dialect's error shape.
    type Error: From<Failure> + IntoResponse + Send;

    /// The route chat requests are counted under in the metrics.
    const ROUTE: &'static str;

    /// How the dialect writes the path of a field in its errors.
    const PATHS: PathStyle = PathStyle::Bracketed;

    /// Parses a request body, with errors that name the offending field.
    fn parse(body: &[u8]) -> Result<Self::Request, Self::Error> {
        parse_json(body, Self::PATHS, Self::invalid)
    }

    /// Translates a request into a chat request and how to answer it.
    fn to_chat(
        request: Self::Request,
        context: &Context<'_>,
    ) -> Result<Translated<Self::Reply>, Self::Error>;

    /// A client mistake about one request field.
    fn invalid(field: &str, message: String) -> Self::Error;
}

/// Parses a request body into `T`. Every error is a client mistake given to `invalid` with the
/// path of the field at fault, written in `style` (empty when there is none; a missing field
/// is named in it, and so is the field below a tagged value, see `tagged`), and a message
/// that starts with that path.
pub fn parse_json<T: DeserializeOwned, E>(
    body: &[u8],
    style: PathStyle,
    invalid: impl Fn(&str, String) -> E,
) -> Result<T, E> {
    let not_json =
        |e: &dyn std::fmt::Display| invalid("", format!("the request body is not valid JSON: {e}"));
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Err(e) => not_json(&e),
                Ok(_) => invalid("", "the request body must be a JSON object".into()),
            },
        );
    }
    // Straight into `T`, without a `serde_json::Value` of the whole body first: that tree
    // costs many times the body's size (a body of 330,000 tiny blocks: about 250 MiB).
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        if matches!(
            e.inner().classify(),
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
        ) {
            return not_json(e.inner());
        }
        let path = e.path().clone();
        let inner = e.into_inner();
        // The message alone: the position in the body says nothing the path does not.
        let text = inner.to_string();
        let position = format!(" at line {} column {}", inner.line(), inner.column());
        let text = text.strip_suffix(&position).unwrap_or(&text);
        let (steps, message) = located(&path, text);
        if steps.is_empty() {
            invalid("", message)
        } else {
            let at = format_path(&steps, style);
            invalid(&at, format!("{at}: {message}"))
        }
    })?;
    de.end().map_err(|e| not_json(&e))?;
    Ok(parsed)
}

/// Why a client tool's input schema cannot be offered, if it cannot: it must be a valid JSON
/// Schema (draft 2020-12, or the bundled draft its `$schema` names), as the Messages API
/// requires; the upstream would refuse the whole request otherwise. Meta-validation only: the
/// schema is not compiled, so the check stays cheap for clients that send many tools.
pub fn tool_schema_error(schema: &serde_json::Value) -> Option<String> {
    jsonschema::meta::validate(schema)
        .err()
        .map(|e| format!("not a valid JSON Schema: {e}"))
}

/// An image the client gives by URL, as the OpenAI dialects take it: a `data:` URL is an
/// image block; an `http(s)` URL is a `RemoteImage` to fetch when `fetch_remote` is set, and
/// refused otherwise. The error is the message for the request field `field`.
pub fn image_url(url: &str, field: &str, fetch_remote: bool) -> Result<ContentBlock, String> {
    if fetch_remote && (url.starts_with("http://") || url.starts_with("https://")) {
        return Ok(ContentBlock::RemoteImage {
            url: url.to_string(),
            field: field.to_string(),
        });
    }
    let Some(rest) = url.strip_prefix("data:") else {
        return Err(format!(
            "{field}: ccpool fetches remote images only with --fetch-remote-images; send the image inline as a data: URL (data:image/png;base64,…)"
        ));
    };
    match rest.split_once(";base64,") {
        Some((media_type, data)) if IMAGE_MEDIA_TYPES.contains(&media_type) && !data.is_empty() => {
            Ok(ContentBlock::Image {
                media_type: media_type.to_string(),
                data: data.to_string(),
            })
        }
        _ => Err(format!(
            "{field}: expected data:image/(jpeg|png|gif|webp);base64,…"
        )),
    }
}

/// What a translation may need besides the request.
pub struct Context<'a> {
    /// Whose workers may serve the request.
    pub owner: OwnerKey,
    /// Model aliases and the reasoning switch.
    pub options: &'a OpenAiOptions,
    /// Remote image URLs are fetched (`--fetch-remote-images`); else they are refused.
    pub fetch_remote_images: bool,
    /// The Responses API's stored responses (`previous_response_id`).
    pub responses: &'a crate::responses::ResponseStore,
}

/// A translated request.
pub struct Translated<R> {
    pub chat: ChatRequest,
    /// Answer as SSE (else one object at the end).
    pub stream: bool,
    pub reply: R,
}

/// One SSE event: an optional event name and its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub name: Option<&'static str>,
    pub data: String,
}

impl SseEvent {
    pub fn data(data: impl Into<String>) -> Self {
        SseEvent {
            name: None,
            data: data.into(),
        }
    }

    pub fn named(name: &'static str, data: impl Into<String>) -> Self {
        SseEvent {
            name: Some(name),
            data: data.into(),
        }
    }

    /// An event whose data is `value` as JSON.
    pub fn json(name: Option<&'static str>, value: &impl serde::Serialize) -> Self {
        SseEvent {
            name,
            data: serde_json::to_string(value).expect("wire types always serialize"),
        }
    }
}

/// How a dialect renders one chat: as SSE events, item by item (a failure after streaming
/// began included), or as one object built from all items.
pub trait Reply: Send + 'static {
    /// The final object of a non-streaming answer.
    type Object: serde::Serialize;

    /// The SSE events for one item.
    fn events(&mut self, item: &ChatItem) -> Vec<SseEvent>;

    /// The event sent while the stream is idle; `None` sends an SSE comment.
    fn keep_alive() -> Option<SseEvent> {
        None
    }

    /// Takes in one event of a non-streaming answer.
    fn push(&mut self, item: &ChatItem);

    /// The final object, once the chat ended without a failure.
    fn finish(self, end: &ChatEnd) -> Self::Object;
}

/// What the OpenAI dialects take from the configuration.
#[derive(Clone, Debug, Default)]
pub struct OpenAiOptions {
    /// Client model name → the model the CLI gets (`gpt-4o` → `claude-sonnet-4-5`).
    pub model_aliases: std::collections::HashMap<String, String>,
    /// Expose the model's thinking as `reasoning_content` (never in `content`).
    pub reasoning_content: bool,
}
