//! The typed layer: [`Message`] = header + parent + metadata + [`Content`] +
//! buffers, and the partial parses a router needs.

use crate::content::Content;
use crate::error::parse_json;
use crate::error::{ProtocolError, Result};
use crate::frames::RawMessage;
use crate::header::Header;
use crate::session::Session;
use serde_json::{Map, Value as Json};

/// A decoded message.
#[derive(Debug)]
pub struct Message {
    /// Routing identities, outermost first.
    pub identities: Vec<Vec<u8>>,
    /// This message's header.
    pub header: Header,
    /// The header of the message this one answers, if any.
    pub parent_header: Option<Header>,
    /// Free-form metadata (zpar puts `engine`, `targets`, timings here).
    pub metadata: Map<String, Json>,
    /// The typed content.
    pub content: Content,
    /// Binary buffers, referenced from the content.
    pub buffers: Vec<zmq::Message>,
}

impl Message {
    /// A new message from `session` with no parent.
    pub fn new(session: &Session, content: Content) -> Message {
        Message {
            identities: Vec::new(),
            header: session.header(content.msg_type()),
            parent_header: None,
            metadata: Map::new(),
            content,
            buffers: Vec::new(),
        }
    }

    /// A reply to this message: same identities, this header as parent.
    ///
    /// ```
    /// use zpar_protocol::{Content, Message, Session, TaskReply};
    /// let s = Session::new(b"", "hmac-sha256", "u").unwrap();
    /// let mut req = Message::new(&s, Content::ClearRequest(Default::default()));
    /// req.identities = vec![b"client".to_vec()];
    /// let rep = req.reply(&s, Content::ClearReply(TaskReply::ok()));
    /// assert_eq!(rep.identities, req.identities);
    /// assert_eq!(rep.parent_header.unwrap().msg_id, req.header.msg_id);
    /// ```
    pub fn reply(&self, session: &Session, content: Content) -> Message {
        Message {
            identities: self.identities.clone(),
            header: session.header(content.msg_type()),
            parent_header: Some(self.header.clone()),
            metadata: Map::new(),
            content,
            buffers: Vec::new(),
        }
    }

    /// Parses a raw message whose signature has already been checked.
    pub fn parse(raw: RawMessage) -> Result<Message> {
        let header = raw.header()?;
        let parent_header = raw.parent_header()?;
        let metadata = raw.metadata()?;
        let content = Content::from_json(&header.msg_type, &raw.content)?;
        Ok(Message {
            identities: raw.identities.iter().map(|f| f.to_vec()).collect(),
            header,
            parent_header,
            metadata,
            content,
            buffers: raw.buffers,
        })
    }
}

impl RawMessage {
    /// Parses just the header.
    pub fn header(&self) -> Result<Header> {
        parse_json("header", &self.header)
    }

    /// Parses just the parent header; `{}` means none.
    pub fn parent_header(&self) -> Result<Option<Header>> {
        let trimmed = self.parent_header.trim_ascii();
        if trimmed == b"{}" || trimmed.is_empty() {
            return Ok(None);
        }
        let v: serde_json::Value = parse_json("parent_header", &self.parent_header)?;
        if v.as_object().is_some_and(|o| o.is_empty()) {
            return Ok(None);
        }
        serde_json::from_value(v)
            .map(Some)
            .map_err(|source| ProtocolError::Json {
                frame: "parent_header".into(),
                source,
            })
    }

    /// Parses just the metadata.
    pub fn metadata(&self) -> Result<Map<String, Json>> {
        parse_json("metadata", &self.metadata)
    }
}
