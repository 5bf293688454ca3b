//! Stage one of the output path: exec stdout frames, which do not align with lines, re-split
//! into NDJSON lines of bounded length.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::io::StreamReader;

/// A line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("a stdout line exceeded {0} bytes")]
    TooLong(usize),
    #[error("a stdout line is not UTF-8")]
    NotUtf8,
    #[error("reading stdout: {0}")]
    Io(#[from] std::io::Error),
}

/// Splits a stream of byte chunks into lines (without the newline). A line longer than
/// `max_len` yields `LineError::TooLong` and ends the stream: a CLI that prints one has
/// failed, and its worker is retired.
pub fn ndjson_lines<S>(chunks: S, max_len: usize) -> impl Stream<Item = Result<String, LineError>>
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + Unpin,
{
    FramedRead::new(
        StreamReader::new(chunks),
        LinesCodec::new_with_max_length(max_len),
    )
    .map(move |r| {
        r.map_err(|e| match e {
            LinesCodecError::MaxLineLengthExceeded => LineError::TooLong(max_len),
            // The codec's only own I/O error: a line that is not UTF-8.
            LinesCodecError::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                LineError::NotUtf8
            }
            LinesCodecError::Io(e) => LineError::Io(e),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    async fn split(chunks: Vec<&'static str>, max: usize) -> Vec<Result<String, String>> {
        let s = stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok(Bytes::from_static(c.as_bytes()))),
        );
        ndjson_lines(s, max)
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
            .await
    }

    #[tokio::test]
    async fn frames_that_cut_lines_anywhere_are_rejoined() {
        let got = split(vec!["{\"a\":", "1}\n{\"b\"", ":2}\n{\"c\":3", "}\n"], 1024).await;
        assert_eq!(
            got,
            vec![
                Ok("{\"a\":1}".to_string()),
                Ok("{\"b\":2}".to_string()),
                Ok("{\"c\":3}".to_string())
            ]
        );
    }

    #[tokio::test]
    async fn an_overlong_line_is_an_error_that_ends_the_stream() {
        let got = split(vec!["ok\n", "0123456789abcdef", "ghij\n", "later\n"], 8).await;
        assert_eq!(got[0], Ok("ok".to_string()));
        assert!(matches!(got[1], Err(ref e) if e.contains("exceeded 8")));
        assert_eq!(got.len(), 2);
    }

    #[tokio::test]
    async fn a_last_line_without_newline_is_kept() {
        let got = split(vec!["a\nb"], 16).await;
        assert_eq!(got, vec![Ok("a".to_string()), Ok("b".to_string())]);
    }
}
