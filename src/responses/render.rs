//! Chat items → a `response` object and its stream events. One `ResponseWriter` builds the
//! object as the items come: a streamed request sends the events it returns, a plain one
//! only keeps the final object. Text blocks become `output_text` parts of one assistant
//! `message` item; a tool-use block closes that message and becomes a `function_call` item.

use std::collections::HashMap;

use crate::chat::{ChatEnd, ChatItem};
use crate::domain::{BlockDelta, BlockKind, StopReason, TurnEvent};
use crate::openai::OpenAiError;

use super::translate::{Echo, new_id};
use super::wire::{
    FunctionCallItem, IncompleteDetails, InputItem, InputTokensDetails, MessageItem, OutputItem,
    OutputText, OutputTokensDetails, Response, ResponseError, Status, StreamEvent, TextEcho,
    TextFormat, ToolChoiceParam, Usage,
};

/// Where a chat block's content goes in the output.
#[derive(Clone, Copy, Debug)]
enum Slot {
    /// A text part: its message's output index and its content index.
    Text { output: usize, content: usize },
    /// A function call's output index.
    Call { output: usize },
}

/// Builds one response from chat items, and the stream events that tell it.
pub struct ResponseWriter {
    response: Response,
    sequence: u64,
    started: bool,
    /// Open blocks, by the chat's block index.
    blocks: HashMap<u32, Slot>,
    /// The output index of the message text is added to, while it is open.
    message: Option<usize>,
}

impl ResponseWriter {
    /// A response in progress, with its id, its creation time and the request's fields.
    pub fn new(id: String, created_at: u64, echo: &Echo) -> Self {
        let response = Response {
            id,
            object: "response",
            created_at,
            status: Status::InProgress,
            background: false,
            completed_at: None,
            error: None,
            incomplete_details: None,
            instructions: echo.instructions.clone(),
            max_output_tokens: echo.max_output_tokens,
            max_tool_calls: None,
            model: echo.model.clone(),
            output: Vec::new(),
            parallel_tool_calls: echo.parallel_tool_calls,
            previous_response_id: echo.previous_response_id.clone(),
            reasoning: echo.reasoning.clone(),
            service_tier: "default",
            store: echo.store,
            temperature: echo.temperature.unwrap_or(1.0),
            text: TextEcho {
                format: echo.text_format.clone().unwrap_or(TextFormat::Text),
                verbosity: echo.verbosity.clone().unwrap_or_else(|| "medium".into()),
            },
            tool_choice: echo
                .tool_choice
                .clone()
                .unwrap_or_else(|| ToolChoiceParam::Mode("auto".into())),
            tools: echo.tools.clone(),
            top_p: echo.top_p.unwrap_or(1.0),
            truncation: "disabled",
            usage: None,
            user: echo.user.clone(),
            metadata: echo.metadata.clone(),
        };
        ResponseWriter {
            response,
            sequence: 0,
            started: false,
            blocks: HashMap::new(),
            message: None,
        }
    }

    /// The response as built so far (final after the `End` item).
    pub fn response(&self) -> &Response {
        &self.response
    }

    pub fn into_response(self) -> Response {
        self.response
    }

    fn next(&mut self) -> u64 {
        let n = self.sequence;
        self.sequence += 1;
        n
    }

    /// The events for one chat item, in order, each with its sequence number.
    pub fn push(&mut self, item: &ChatItem) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            let snapshot = Box::new(self.response.clone());
            out.push(StreamEvent::Created {
                sequence_number: self.next(),
                response: snapshot.clone(),
            });
            out.push(StreamEvent::InProgress {
                sequence_number: self.next(),
                response: snapshot,
            });
        }
        match item {
            ChatItem::Event(TurnEvent::BlockStart { index, block }) => match block {
                BlockKind::Text => {
                    let slot = self.open_text(&mut out);
                    self.blocks.insert(*index, slot);
                }
                BlockKind::ToolUse { id, name } => {
                    self.close_message(Status::Completed, &mut out);
                    let output = self.response.output.len();
                    let item = OutputItem::FunctionCall {
                        id: new_id("fc"),
                        call_id: id.clone(),
                        name: name.clone(),
                        arguments: String::new(),
                        status: Status::InProgress,
                    };
                    self.response.output.push(item.clone());
                    out.push(StreamEvent::OutputItemAdded {
                        sequence_number: self.next(),
                        output_index: output,
                        item,
                    });
                    self.blocks.insert(*index, Slot::Call { output });
                }
                _ => {}
            },
            ChatItem::Event(TurnEvent::BlockDelta { index, delta }) => {
                match (self.blocks.get(index).copied(), delta) {
                    (Some(slot @ Slot::Text { .. }), BlockDelta::Text(text)) => {
                        self.text_delta(slot, text, &mut out)
                    }
                    (Some(Slot::Call { output }), BlockDelta::InputJson(json)) => {
                        if let OutputItem::FunctionCall { id, arguments, .. } =
                            &mut self.response.output[output]
                        {
                            arguments.push_str(json);
                            let item_id = id.clone();
                            out.push(StreamEvent::FunctionCallArgumentsDelta {
                                sequence_number: self.next(),
                                item_id,
                                output_index: output,
                                delta: json.clone(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            ChatItem::Event(TurnEvent::BlockStop { index }) => {
                if let Some(slot) = self.blocks.remove(index) {
                    self.close_slot(slot, Status::Completed, &mut out);
                }
            }
            ChatItem::Event(_) => {}
            ChatItem::End(end) => self.finish(end, &mut out),
        }
        out
    }

    /// A new text part, in the open message or a new one.
    fn open_text(&mut self, out: &mut Vec<StreamEvent>) -> Slot {
        let output = match self.message {
            Some(output) => output,
            None => {
                let output = self.response.output.len();
                let item = OutputItem::Message {
                    id: new_id("msg"),
                    status: Status::InProgress,
                    role: "assistant",
                    content: Vec::new(),
                };
                self.response.output.push(item.clone());
                out.push(StreamEvent::OutputItemAdded {
                    sequence_number: self.next(),
                    output_index: output,
                    item,
                });
                self.message = Some(output);
                output
            }
        };
        let part = OutputText {
            text: String::new(),
            annotations: Vec::new(),
            logprobs: Vec::new(),
        };
        let OutputItem::Message { id, content, .. } = &mut self.response.output[output] else {
            unreachable!("the open message is a message item");
        };
        content.push(part.clone());
        let (item_id, content_index) = (id.clone(), content.len() - 1);
        out.push(StreamEvent::ContentPartAdded {
            sequence_number: self.next(),
            item_id,
            output_index: output,
            content_index,
            part,
        });
        Slot::Text {
            output,
            content: content_index,
        }
    }

    fn text_delta(&mut self, slot: Slot, text: &str, out: &mut Vec<StreamEvent>) {
        let Slot::Text { output, content } = slot else {
            return;
        };
        if let OutputItem::Message {
            id, content: parts, ..
        } = &mut self.response.output[output]
        {
            parts[content].text.push_str(text);
            let item_id = id.clone();
            out.push(StreamEvent::OutputTextDelta {
                sequence_number: self.next(),
                item_id,
                output_index: output,
                content_index: content,
                delta: text.to_string(),
                logprobs: Vec::new(),
            });
        }
    }

    /// Ends a text part, or a function call with `status`.
    fn close_slot(&mut self, slot: Slot, status: Status, out: &mut Vec<StreamEvent>) {
        match slot {
            Slot::Text { output, content } => {
                let OutputItem::Message {
                    id, content: parts, ..
                } = &self.response.output[output]
                else {
                    return;
                };
                let (item_id, part) = (id.clone(), parts[content].clone());
                out.push(StreamEvent::OutputTextDone {
                    sequence_number: self.next(),
                    item_id: item_id.clone(),
                    output_index: output,
                    content_index: content,
                    text: part.text.clone(),
                    logprobs: Vec::new(),
                });
                out.push(StreamEvent::ContentPartDone {
                    sequence_number: self.next(),
                    item_id,
                    output_index: output,
                    content_index: content,
                    part,
                });
            }
            Slot::Call { output } => {
                let OutputItem::FunctionCall {
                    id,
                    name,
                    arguments,
                    status: item_status,
                    ..
                } = &mut self.response.output[output]
                else {
                    return;
                };
                *item_status = status;
                let (item_id, name, arguments) = (id.clone(), name.clone(), arguments.clone());
                let item = self.response.output[output].clone();
                out.push(StreamEvent::FunctionCallArgumentsDone {
                    sequence_number: self.next(),
                    item_id,
                    output_index: output,
                    name,
                    arguments,
                });
                out.push(StreamEvent::OutputItemDone {
                    sequence_number: self.next(),
                    output_index: output,
                    item,
                });
            }
        }
    }

    /// Ends the open message item, if there is one.
    fn close_message(&mut self, status: Status, out: &mut Vec<StreamEvent>) {
        let Some(output) = self.message.take() else {
            return;
        };
        let open: Vec<(u32, Slot)> = self
            .blocks
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Text { output: o, .. } if *o == output))
            .map(|(i, s)| (*i, *s))
            .collect();
        for (index, slot) in open {
            self.blocks.remove(&index);
            self.close_slot(slot, status, out);
        }
        if let OutputItem::Message { status: s, .. } = &mut self.response.output[output] {
            *s = status;
        }
        let item = self.response.output[output].clone();
        out.push(StreamEvent::OutputItemDone {
            sequence_number: self.next(),
            output_index: output,
            item,
        });
    }

    fn finish(&mut self, end: &ChatEnd, out: &mut Vec<StreamEvent>) {
        if let Some(object) = &end.structured_output {
            let slot = self.open_text(out);
            self.text_delta(slot, object, out);
            self.close_slot(slot, Status::Completed, out);
        }
        let (status, error, incomplete) = match (&end.failure, &end.stop_reason) {
            (Some(failure), _) => {
                let e = OpenAiError::from_failure(failure);
                let code = match e.status.as_u16() {
                    429 => "rate_limit_exceeded",
                    400 => "invalid_prompt",
                    _ => "server_error",
                };
                let error = ResponseError {
                    code,
                    message: e.message,
                };
                (Status::Failed, Some(error), None)
            }
            (None, Some(StopReason::MaxTokens)) => {
                (Status::Incomplete, None, Some("max_output_tokens"))
            }
            (None, Some(StopReason::Refusal)) => (Status::Incomplete, None, Some("content_filter")),
            (None, _) => (Status::Completed, None, None),
        };
        let item_status = if status == Status::Completed {
            Status::Completed
        } else {
            Status::Incomplete
        };
        let mut open: Vec<(u32, Slot)> = self.blocks.drain().collect();
        open.sort_by_key(|(i, _)| *i);
        for (_, slot) in open {
            if matches!(slot, Slot::Call { .. }) {
                self.close_slot(slot, Status::Incomplete, out);
            } else {
                self.close_slot(slot, item_status, out);
            }
        }
        self.close_message(item_status, out);
        let response = &mut self.response;
        response.status = status;
        response.error = error;
        response.incomplete_details = incomplete.map(|reason| IncompleteDetails { reason });
        response.usage = Some(usage(&end.usage));
        if status == Status::Completed {
            response.completed_at = Some(now());
        }
        let response = Box::new(self.response.clone());
        let sequence_number = self.next();
        out.push(match status {
            Status::Completed | Status::InProgress => StreamEvent::Completed {
                sequence_number,
                response,
            },
            Status::Incomplete => StreamEvent::Incomplete {
                sequence_number,
                response,
            },
            Status::Failed => StreamEvent::Failed {
                sequence_number,
                response,
            },
        });
    }
}

/// The domain's token counts in the Responses shape: input counts every input token.
pub fn usage(usage: &crate::domain::Usage) -> Usage {
    let input =
        usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens;
    Usage {
        input_tokens: input,
        input_tokens_details: InputTokensDetails {
            cached_tokens: usage.cache_read_input_tokens,
            cache_write_tokens: usage.cache_creation_input_tokens,
        },
        output_tokens: usage.output_tokens,
        output_tokens_details: OutputTokensDetails::default(),
        total_tokens: input + usage.output_tokens,
    }
}

/// A response's output as conversation items, for the next request to continue from.
pub fn output_items(response: &Response) -> Vec<InputItem> {
    response
        .output
        .iter()
        .map(|item| match item {
            OutputItem::Message {
                id,
                status,
                content,
                ..
            } => InputItem::Message(MessageItem {
                id: Some(id.clone()),
                role: "assistant".into(),
                content: content
                    .iter()
                    .map(|p| super::wire::ContentPart::OutputText {
                        text: p.text.clone(),
                        annotations: Vec::new(),
                        logprobs: Vec::new(),
                    })
                    .collect(),
                status: Some(status_name(*status).into()),
            }),
            OutputItem::FunctionCall {
                id,
                call_id,
                name,
                arguments,
                status,
            } => InputItem::FunctionCall(FunctionCallItem {
                id: Some(id.clone()),
                call_id: call_id.clone(),
                name: name.clone(),
                arguments: arguments.clone(),
                status: Some(status_name(*status).into()),
            }),
        })
        .collect()
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::InProgress => "in_progress",
        Status::Completed => "completed",
        Status::Incomplete => "incomplete",
        Status::Failed => "failed",
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod unit {
    use super::*;
    use crate::chat::ChatFailure;
    use crate::domain::{StopReason, Usage as DomainUsage};
    use serde_json::Value;
    use serde_json::{Map, json};

    fn echo() -> Echo {
        Echo {
            model: "gpt-4o".into(),
            instructions: Some("Be brief.".into()),
            parallel_tool_calls: true,
            store: true,
            metadata: Map::from_iter([("k".to_string(), json!("v"))]),
            ..Echo::default()
        }
    }

    fn ev(event: TurnEvent) -> ChatItem {
        ChatItem::Event(event)
    }

    fn start(index: u32, block: BlockKind) -> ChatItem {
        ev(TurnEvent::BlockStart { index, block })
    }

    fn text(index: u32, t: &str) -> ChatItem {
        ev(TurnEvent::BlockDelta {
            index,
            delta: BlockDelta::Text(t.into()),
        })
    }

    fn stop(index: u32) -> ChatItem {
        ev(TurnEvent::BlockStop { index })
    }

    fn end(stop_reason: StopReason) -> ChatItem {
        ChatItem::End(ChatEnd {
            stop_reason: Some(stop_reason),
            stop_sequence: None,
            usage: DomainUsage {
                input_tokens: 10,
                output_tokens: 5,
                cache_creation_input_tokens: 2,
                cache_read_input_tokens: 3,
            },
            failure: None,
            structured_output: None,
        })
    }

    fn message_start() -> ChatItem {
        ev(TurnEvent::MessageStart {
            id: "m".into(),
            model: "claude".into(),
            usage: DomainUsage::default(),
        })
    }

    fn run(items: &[ChatItem]) -> (Vec<Value>, Response) {
        let mut w = ResponseWriter::new("resp_1".into(), 42, &echo());
        let events: Vec<Value> = items
            .iter()
            .flat_map(|i| w.push(i))
            .map(|e| {
                let v = serde_json::to_value(&e).unwrap();
                assert_eq!(v["type"], e.name(), "the SSE name is the event's type");
                v
            })
            .collect();
        for (n, e) in events.iter().enumerate() {
            assert_eq!(
                e["sequence_number"], n as u64,
                "sequence numbers count from 0"
            );
        }
        (events, w.into_response())
    }

    fn types(events: &[Value]) -> Vec<&str> {
        events.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    #[test]
    fn a_text_answer_streams_in_the_documented_order() {
        let (events, response) = run(&[
            message_start(),
            start(0, BlockKind::Text),
            text(0, "Hel"),
            text(0, "lo"),
            stop(0),
            ev(TurnEvent::MessageStop),
            end(StopReason::EndTurn),
        ]);
        assert_eq!(
            types(&events),
            vec![
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let created = &events[0]["response"];
        assert_eq!(created["status"], "in_progress");
        assert_eq!(created["output"], json!([]));
        assert_eq!(created["usage"], Value::Null);
        let item_id = events[2]["item"]["id"].as_str().unwrap();
        assert!(item_id.starts_with("msg_"));
        assert_eq!(
            events[2]["item"],
            json!({"type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []})
        );
        assert_eq!(
            events[3],
            json!({"type": "response.content_part.added", "sequence_number": 3, "item_id": item_id, "output_index": 0, "content_index": 0,
                   "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}})
        );
        assert_eq!(
            events[4],
            json!({"type": "response.output_text.delta", "sequence_number": 4, "item_id": item_id, "output_index": 0, "content_index": 0, "delta": "Hel", "logprobs": []})
        );
        assert_eq!(events[6]["text"], "Hello");
        assert_eq!(events[7]["part"]["text"], "Hello");
        assert_eq!(events[8]["item"]["status"], "completed");
        let done = &events[9]["response"];
        assert_eq!(done["status"], "completed");
        assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(
            done["usage"],
            json!({"input_tokens": 15, "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 2},
                   "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 20})
        );
        assert!(done["completed_at"].as_u64().unwrap() > 1_700_000_000);
        assert_eq!(serde_json::to_value(&response).unwrap(), *done);
    }

    #[test]
    fn the_response_object_has_every_field_the_sdk_reads() {
        let (_, response) = run(&[
            start(0, BlockKind::Text),
            text(0, "x"),
            stop(0),
            end(StopReason::EndTurn),
        ]);
        let r = serde_json::to_value(&response).unwrap();
        assert_eq!(r["id"], "resp_1");
        assert_eq!(r["object"], "response");
        assert_eq!(r["created_at"], 42);
        assert_eq!(r["model"], "gpt-4o");
        assert_eq!(r["instructions"], "Be brief.");
        assert_eq!(r["error"], Value::Null);
        assert_eq!(r["incomplete_details"], Value::Null);
        assert_eq!(r["parallel_tool_calls"], true);
        assert_eq!(r["tool_choice"], "auto");
        assert_eq!(r["tools"], json!([]));
        assert_eq!(
            r["text"],
            json!({"format": {"type": "text"}, "verbosity": "medium"})
        );
        assert_eq!(r["temperature"], 1.0);
        assert_eq!(r["top_p"], 1.0);
        assert_eq!(r["metadata"], json!({"k": "v"}));
        assert_eq!(r["store"], true);
        assert_eq!(r["background"], false);
        assert_eq!(r["previous_response_id"], Value::Null);
    }

    #[test]
    fn a_tool_call_after_text_closes_the_message_and_streams_its_arguments() {
        let (events, response) = run(&[
            start(0, BlockKind::Text),
            text(0, "Let me check."),
            stop(0),
            start(
                1,
                BlockKind::ToolUse {
                    id: "toolu_1".into(),
                    name: "get_weather".into(),
                },
            ),
            ev(TurnEvent::BlockDelta {
                index: 1,
                delta: BlockDelta::InputJson("{\"city\":".into()),
            }),
            ev(TurnEvent::BlockDelta {
                index: 1,
                delta: BlockDelta::InputJson("\"Paris\"}".into()),
            }),
            stop(1),
            end(StopReason::ToolUse),
        ]);
        assert_eq!(
            types(&events)[7..].to_vec(),
            vec![
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let call = &events[8]["item"];
        assert_eq!(call["type"], "function_call");
        assert_eq!(call["call_id"], "toolu_1", "the upstream's own id");
        assert_eq!(call["name"], "get_weather");
        assert_eq!(call["arguments"], "");
        assert_eq!(call["status"], "in_progress");
        let fc = call["id"].as_str().unwrap();
        assert!(fc.starts_with("fc_"));
        assert_eq!(events[9]["item_id"], fc);
        assert_eq!(events[9]["output_index"], 1);
        assert_eq!(events[11]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(events[11]["name"], "get_weather");
        assert_eq!(events[12]["item"]["status"], "completed");
        assert_eq!(response.status, Status::Completed);
        let items = output_items(&response);
        assert_eq!(items.len(), 2);
        assert_eq!(
            items[1],
            InputItem::FunctionCall(FunctionCallItem {
                id: Some(fc.to_string()),
                call_id: "toolu_1".into(),
                name: "get_weather".into(),
                arguments: "{\"city\":\"Paris\"}".into(),
                status: Some("completed".into()),
            })
        );
    }

    #[test]
    fn max_output_tokens_ends_incomplete() {
        let (events, response) = run(&[
            start(0, BlockKind::Text),
            text(0, "Trunc"),
            stop(0),
            end(StopReason::MaxTokens),
        ]);
        let last = events.last().unwrap();
        assert_eq!(last["type"], "response.incomplete");
        assert_eq!(last["response"]["status"], "incomplete");
        assert_eq!(
            last["response"]["incomplete_details"],
            json!({"reason": "max_output_tokens"})
        );
        assert_eq!(last["response"]["output"][0]["status"], "incomplete");
        assert_eq!(last["response"]["completed_at"], Value::Null);
        assert_eq!(response.status, Status::Incomplete);
    }

    #[test]
    fn a_failure_after_the_start_ends_failed_with_the_error() {
        let failure = ChatItem::End(ChatEnd {
            stop_reason: None,
            stop_sequence: None,
            usage: DomainUsage::default(),
            failure: Some(ChatFailure::Upstream {
                status: Some(429),
                kind: Some("rate_limit_error".into()),
                message: "slow down".into(),
            }),
            structured_output: None,
        });
        let (events, _) = run(&[start(0, BlockKind::Text), text(0, "Part"), failure]);
        assert_eq!(
            types(&events)[5..].to_vec(),
            vec![
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.failed"
            ],
            "open items are closed before the end"
        );
        let r = &events.last().unwrap()["response"];
        assert_eq!(r["status"], "failed");
        assert_eq!(
            r["error"],
            json!({"code": "rate_limit_exceeded", "message": "slow down"})
        );
        assert_eq!(r["output"][0]["status"], "incomplete");
    }

    #[test]
    fn a_structured_answer_is_one_output_text_at_the_end() {
        let (events, response) = run(&[
            message_start(),
            ChatItem::End(ChatEnd {
                stop_reason: Some(StopReason::EndTurn),
                stop_sequence: None,
                usage: DomainUsage::default(),
                failure: None,
                structured_output: Some(r#"{"answer":42}"#.into()),
            }),
        ]);
        assert_eq!(events.len(), 9);
        assert_eq!(events[4]["delta"], r#"{"answer":42}"#);
        assert_eq!(response.status, Status::Completed);
        let OutputItem::Message {
            content, status, ..
        } = &response.output[0]
        else {
            panic!("{response:?}");
        };
        assert_eq!(content[0].text, r#"{"answer":42}"#);
        assert_eq!(*status, Status::Completed);
    }

    #[test]
    fn thinking_and_other_blocks_are_not_output() {
        let (events, response) = run(&[
            start(0, BlockKind::Thinking),
            ev(TurnEvent::BlockDelta {
                index: 0,
                delta: BlockDelta::Thinking("hmm".into()),
            }),
            stop(0),
            end(StopReason::EndTurn),
        ]);
        assert_eq!(
            types(&events),
            vec![
                "response.created",
                "response.in_progress",
                "response.completed"
            ]
        );
        assert!(response.output.is_empty());
    }
}
