//! Isolated sessions: one sandbox per conversation. A session owns a container of its own
//! (never shared), a workspace volume, and a live CLI conversation. Follow-up turns send
//! only what is new; a diverged history forks by replaying a transcript. Sessions expire
//! after an idle TTL; ending one removes its container and (unless kept) its volume.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::domain::{
    ContentBlock, HistoryMessage, LaunchProfile, OwnerKey, Role, StopReason, TurnRequest,
    TurnStatus,
};
use crate::pool::{PoolError, TurnStream, WarmPool};
use crate::runtime::{ExecOutput, ExecSpec, LABEL_INSTANCE, LABEL_MANAGED, LABEL_SESSION};
use crate::worker::{SessionWorkspace, Worker};

/// What a second request to a busy session gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusyPolicy {
    /// Wait for the running turn (bounded by the pool's checkout timeout).
    Wait,
    /// Answer 409 at once.
    Reject,
}

/// What happens at startup to the sessions an earlier run of this instance left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Their containers and volumes are removed.
    Remove,
    /// Their workspaces (volumes) are kept and the sessions registered again; their next
    /// request gets a new container on the same workspace and replays the history it sends.
    Adopt,
}

#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub ttl: Duration,
    /// Sessions at most, of all owners.
    pub max_sessions: usize,
    /// Sessions at most for one owner (a client key).
    pub max_sessions_per_owner: usize,
    /// The bytes a session's workspace may hold, as far as the files API writes them.
    pub workspace_quota_bytes: u64,
    pub on_busy: BusyPolicy,
    pub keep_volumes: bool,
    pub on_restart: RestartPolicy,
    /// Session workers kept started ahead, each on a fresh volume, for new sessions to claim
    /// (0: none). Off when volumes are kept or adopted at restart: a claimed workspace keeps
    /// its pre-warmed name, which names no session.
    pub prewarm: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            ttl: Duration::from_secs(30 * 60),
            max_sessions: 16,
            max_sessions_per_owner: 8,
            workspace_quota_bytes: 1024 * 1024 * 1024,
            on_busy: BusyPolicy::Wait,
            keep_volumes: false,
            on_restart: RestartPolicy::Remove,
            // `ccpool serve` pre-warms one (`--session-prewarm`); embedders and tests opt in.
            prewarm: 0,
        }
    }
}

/// Options a session is created with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionOptions {
    /// The CLI's built-in tools inside the sandbox (permissions bypassed: the container is
    /// the boundary).
    pub tools: bool,
    pub system_prompt: Option<String>,
    pub model: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("invalid session id: {0}")]
    InvalidId(String),
    #[error("no session {0}")]
    NotFound(String),
    #[error("session {0} exists already")]
    Exists(String),
    #[error("the maximum of {0} sessions is reached")]
    TooMany(usize),
    #[error("the maximum of {0} sessions for one API key is reached")]
    TooManyForOwner(usize),
    #[error("the workspace quota of {0} bytes would be exceeded")]
    QuotaExceeded(u64),
    #[error("the file exceeds {0} bytes")]
    FileTooLarge(u64),
    #[error("session {0} is serving another request")]
    Busy(String),
    #[error("the system prompt of session {0} was fixed when it was created")]
    SystemPromptChanged(String),
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("{0} is outside the workspace")]
    OutsideWorkspace(String),
    #[error("no file {0} in the workspace")]
    FileNotFound(String),
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The detail (an engine message, a container id) is for the log, never for the client.
    #[error("the session's container failed: {0}")]
    Container(String),
}

/// A snapshot of a session, for the listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionSummary {
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    pub last_used: u64,
    pub model: Option<String>,
    pub turns: u64,
    pub forks: u64,
    pub tools: bool,
    pub container: Option<String>,
    pub volume: String,
}

/// What the listing shows, kept outside the turn lock so it is readable while busy.
#[derive(Clone, Debug)]
struct SessionInfo {
    last_used: Instant,
    last_used_wall: SystemTime,
    model: Option<String>,
    turns: u64,
    forks: u64,
    container: Option<String>,
}

struct Session {
    id: String,
    /// The owner that created it: no other owner can see or use it.
    owner: OwnerKey,
    /// Unique across owners: `{owner}.{id}` (neither contains a dot). The registry's key.
    key: String,
    /// Its workspace: the volume and the value of the session label on the volume and the
    /// container, `{owner}.{id}` and `ccpool.{instance}.{owner}.{id}`, or a pre-warmed
    /// worker's (`prewarmed-…`) when the session claimed one.
    workspace: Mutex<SessionWorkspace>,
    created: SystemTime,
    options: SessionOptions,
    info: Mutex<SessionInfo>,
    /// Held for the duration of a turn.
    state: Arc<tokio::sync::Mutex<SessionState>>,
}

#[derive(Default)]
struct SessionState {
    worker: Option<Worker>,
    /// The session has had a container (so its workspace exists): a pre-warmed worker, which
    /// comes with a fresh workspace, may only be its first.
    started: bool,
    /// What the live CLI conversation holds, as the client saw it; `None` when unknown (a
    /// cut or failed turn), which makes the next request replay.
    transcript: Option<Vec<HistoryMessage>>,
    profile: Option<LaunchProfile>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The registry key of a session: ids are per owner, so two owners may both have a session
/// `a` and never see each other's.
fn session_key(owner: &OwnerKey, id: &str) -> String {
    format!("{owner}.{id}")
}

/// Session ids: 1 to 64 letters, digits, `-` or `_`.
pub fn validate_id(id: &str) -> Result<(), SessionError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(SessionError::InvalidId(
            "use 1 to 64 letters, digits, '-' or '_'".into(),
        ))
    }
}

/// Workspace paths: relative, no `..`, no empty or odd components.
pub fn validate_path(path: &str) -> Result<(), SessionError> {
    let bad = |why: &str| Err(SessionError::InvalidPath(format!("{path:?}: {why}")));
    if path.is_empty() || path.len() > 1024 {
        return bad("must be 1 to 1024 characters");
    }
    if path.starts_with('/') {
        return bad("absolute paths are not allowed");
    }
    if path.contains('\0') || path.contains('\\') {
        return bad("must not contain NUL or backslashes");
    }
    if path.split('/').any(|c| c == "..") {
        return bad("'..' is not allowed");
    }
    if path.split('/').any(|c| c.is_empty() || c == ".") {
        return bad("empty or '.' components are not allowed");
    }
    Ok(())
}

/// How a request relates to what the session holds.
#[derive(Debug, PartialEq, Eq)]
enum Continuation {
    /// The history extends the session's: send only these new user turns.
    Append(Vec<ContentBlock>),
    /// The history diverges (or is unknown): replay it.
    Replay,
    /// The client starts over with no history: reset, then send the prompt.
    Restart,
}

fn continuation(known: Option<&[HistoryMessage]>, history: &[HistoryMessage]) -> Continuation {
    match known {
        Some(known) if history.len() >= known.len() && history[..known.len()] == *known => {
            let rest = &history[known.len()..];
            if rest.iter().all(|m| m.role == Role::User) {
                Continuation::Append(rest.iter().flat_map(|m| m.content.clone()).collect())
            } else {
                Continuation::Replay
            }
        }
        _ if history.is_empty() => Continuation::Restart,
        _ => Continuation::Replay,
    }
}

/// A workspace file being read: its size, then its content as it comes.
pub struct WorkspaceFile {
    pub size: u64,
    pub body: futures::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>>,
}

/// A started session turn.
pub struct SessionTurn {
    pub stream: TurnStream,
    /// The history diverged from the session's and was replayed.
    pub forked: bool,
    /// The session has tools on: the CLI runs its tool loop within the turn.
    pub agentic: bool,
}

struct SessionsInner {
    pool: WarmPool,
    config: SessionConfig,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

/// The sessions of this instance. Cheap to clone.
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<SessionsInner>,
}

impl Sessions {
    /// Applies the restart policy to what an earlier run left and starts the TTL reaper.
    pub async fn start(pool: WarmPool, config: SessionConfig) -> Result<Sessions, SessionError> {
        let inner = Arc::new(SessionsInner {
            pool,
            config,
            sessions: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
        });
        let sessions = Sessions { inner };
        sessions.restart_policy().await?;
        if sessions.prewarming() {
            sessions
                .inner
                .pool
                .prewarm_sessions(sessions.inner.config.prewarm);
        }
        let reaper = sessions.clone();
        let cancel = sessions.inner.cancel.clone();
        sessions.inner.tasks.spawn(async move {
            let tick = (reaper.inner.config.ttl / 4)
                .clamp(Duration::from_millis(100), Duration::from_secs(30));
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(tick) => reaper.expire().await,
                }
            }
        });
        Ok(sessions)
    }

    fn instance(&self) -> String {
        self.inner.pool.settings().instance_id.clone()
    }

    /// `ccpool.{instance}.{owner}.{id}`: none of the parts contains a dot, so two sessions
    /// never share a volume, whatever their instance, owner and id.
    fn volume_name(&self, key: &str) -> String {
        format!("ccpool.{}.{key}", self.instance())
    }

    async fn restart_policy(&self) -> Result<(), SessionError> {
        let runtime = self.inner.pool.runtime();
        let instance = self.instance();
        let volumes = runtime
            .list_volumes(&[(LABEL_MANAGED, "true"), (LABEL_INSTANCE, &instance)])
            .await
            .map_err(|e| SessionError::Container(e.to_string()))?;
        let prefix = format!("ccpool.{instance}.");
        for volume in volumes {
            let owner_and_id = volume
                .strip_prefix(&prefix)
                .and_then(|rest| rest.split_once('.'))
                .filter(|(owner, id)| validate_id(owner).is_ok() && validate_id(id).is_ok());
            match (self.inner.config.on_restart, owner_and_id) {
                (RestartPolicy::Adopt, Some((owner, id))) => {
                    tracing::info!(session = %id, "adopted an earlier session's workspace");
                    let session =
                        self.new_session(&OwnerKey::new(owner), id, SessionOptions::default());
                    session.state.lock().await.started = true;
                    lock(&self.inner.sessions).insert(session.key.clone(), session);
                }
                _ => {
                    if let Err(e) = runtime.remove_volume(&volume).await {
                        tracing::warn!(cause = %e, "removing an earlier session's volume");
                    }
                }
            }
        }
        Ok(())
    }

    fn new_session(&self, owner: &OwnerKey, id: &str, options: SessionOptions) -> Arc<Session> {
        let now = SystemTime::now();
        let key = session_key(owner, id);
        Arc::new(Session {
            id: id.to_string(),
            owner: owner.clone(),
            workspace: Mutex::new(SessionWorkspace {
                session_id: key.clone(),
                volume: self.volume_name(&key),
            }),
            key,
            created: now,
            info: Mutex::new(SessionInfo {
                last_used: Instant::now(),
                last_used_wall: now,
                model: options.model.clone(),
                turns: 0,
                forks: 0,
                container: None,
            }),
            options,
            state: Arc::new(tokio::sync::Mutex::new(SessionState::default())),
        })
    }

    /// The session `id` of `owner`. Another owner's session of the same id is a different
    /// session: it is never found, so its existence is never confirmed.
    fn get(&self, owner: &OwnerKey, id: &str) -> Result<Arc<Session>, SessionError> {
        validate_id(id)?;
        lock(&self.inner.sessions)
            .get(&session_key(owner, id))
            .cloned()
            .ok_or_else(|| SessionError::NotFound(id.to_string()))
    }

    fn get_or_insert(
        &self,
        owner: &OwnerKey,
        id: &str,
        options: SessionOptions,
    ) -> Result<(Arc<Session>, bool), SessionError> {
        validate_id(id)?;
        let key = session_key(owner, id);
        let mut sessions = lock(&self.inner.sessions);
        if let Some(session) = sessions.get(&key) {
            return Ok((session.clone(), false));
        }
        let config = &self.inner.config;
        if sessions.values().filter(|s| s.owner == *owner).count() >= config.max_sessions_per_owner
        {
            return Err(SessionError::TooManyForOwner(config.max_sessions_per_owner));
        }
        if sessions.len() >= config.max_sessions {
            return Err(SessionError::TooMany(config.max_sessions));
        }
        let session = self.new_session(owner, id, options);
        sessions.insert(key, session.clone());
        Ok((session, true))
    }

    /// Creates a session explicitly, with its options, and starts its container.
    pub async fn create(
        &self,
        owner: &OwnerKey,
        id: &str,
        options: SessionOptions,
    ) -> Result<SessionSummary, SessionError> {
        let (session, created) = self.get_or_insert(owner, id, options.clone())?;
        if !created {
            return Err(SessionError::Exists(id.to_string()));
        }
        let profile = LaunchProfile {
            system_prompt: options.system_prompt.clone(),
            builtin_tools: options.tools,
            ..LaunchProfile::default()
        };
        let mut state = session.state.clone().lock_owned().await;
        state.profile = Some(profile.clone());
        if let Err(e) = self.ensure_worker(&session, &mut state).await {
            drop(state);
            self.end_key(&session.key).await.ok();
            return Err(e);
        }
        drop(state);
        Ok(self.summary(&session))
    }

    async fn ensure_worker(
        &self,
        session: &Session,
        state: &mut SessionState,
    ) -> Result<(), SessionError> {
        if state.worker.as_mut().is_some_and(|w| w.is_alive()) {
            return Ok(());
        }
        if state.worker.take().is_some() {
            // The container died: the workspace survives, the conversation must be replayed.
            state.transcript = None;
        }
        let profile = state.profile.clone().unwrap_or_default();
        if !state.started && self.prewarming() {
            // A new session: a pre-warmed worker on a fresh volume is its workspace.
            if let Some((worker, workspace)) = self.inner.pool.claim_prewarmed(&profile) {
                tracing::debug!(session = %session.id, volume = %workspace.volume, "claimed a pre-warmed worker");
                *lock(&session.workspace) = workspace;
                self.put_worker(session, state, worker);
                return Ok(());
            }
        }
        let workspace = lock(&session.workspace).clone();
        let runtime = self.inner.pool.runtime();
        let labels = HashMap::from([
            (LABEL_MANAGED.to_string(), "true".to_string()),
            (LABEL_INSTANCE.to_string(), self.instance()),
            (LABEL_SESSION.to_string(), workspace.session_id.clone()),
        ]);
        runtime
            .create_volume(&workspace.volume, &labels)
            .await
            .map_err(|e| SessionError::Container(e.to_string()))?;
        let worker = self.inner.pool.start_dedicated(profile, workspace).await?;
        self.put_worker(session, state, worker);
        Ok(())
    }

    fn put_worker(&self, session: &Session, state: &mut SessionState, worker: Worker) {
        lock(&session.info).container = Some(worker.container_id().to_string());
        state.worker = Some(worker);
        state.started = true;
        state.transcript = Some(Vec::new());
    }

    /// Whether new sessions claim pre-warmed workers (see `SessionConfig::prewarm`).
    fn prewarming(&self) -> bool {
        let config = &self.inner.config;
        config.prewarm > 0 && !config.keep_volumes && config.on_restart == RestartPolicy::Remove
    }

    /// Starts a turn in a session of `owner` (created on first use, with `options`), for a
    /// request that asks for `profile`.
    pub async fn start_turn(
        &self,
        owner: &OwnerKey,
        id: &str,
        profile: &LaunchProfile,
        turn: TurnRequest,
        options: SessionOptions,
    ) -> Result<SessionTurn, SessionError> {
        let (session, _) = self.get_or_insert(owner, id, options)?;
        let mut state = self.lock_state(&session).await?;
        {
            let mut info = lock(&session.info);
            info.last_used = Instant::now();
            info.last_used_wall = SystemTime::now();
        }
        match &state.profile {
            Some(current)
                if profile.system_prompt.is_some()
                    && profile.system_prompt != current.system_prompt =>
            {
                return Err(SessionError::SystemPromptChanged(id.to_string()));
            }
            Some(_) => {}
            None => {
                state.profile = Some(LaunchProfile {
                    builtin_tools: session.options.tools,
                    system_prompt: profile
                        .system_prompt
                        .clone()
                        .or(session.options.system_prompt.clone()),
                    // The profile comes with its model (`ChatRequest::launch_profile`).
                    ..profile.clone()
                });
            }
        }
        self.ensure_worker(&session, &mut state).await?;

        let history = turn.history.clone();
        let mut sent = turn.clone();
        let mut forked = false;
        match continuation(state.transcript.as_deref(), &history) {
            Continuation::Append(new_user_turns) => {
                sent.history = Vec::new();
                sent.content = new_user_turns
                    .into_iter()
                    .chain(turn.content.clone())
                    .collect();
            }
            // The full history goes to the worker, which replays it through a transcript; it
            // is a fork when the session held a conversation already.
            Continuation::Replay => {
                forked = state.transcript.as_ref().is_some_and(|t| !t.is_empty())
            }
            Continuation::Restart => {
                forked = state.transcript.as_ref().is_some_and(|t| !t.is_empty());
                let worker = state.worker.as_mut().expect("ensured above");
                if worker.uses() > 0 {
                    worker
                        .reset(Duration::from_secs(10))
                        .await
                        .map_err(|e| SessionError::Container(e.to_string()))?;
                }
            }
        }
        if forked {
            lock(&session.info).forks += 1;
        }
        if let Some(model) = &turn.model {
            lock(&session.info).model = Some(model.clone());
        }
        let mut client_view = history;
        client_view.push(HistoryMessage {
            role: Role::User,
            content: turn.content.clone(),
        });
        let worker = state.worker.take().expect("ensured above");
        let info_session = session.clone();
        let stream = self
            .inner
            .pool
            .run_owned(worker, sent, move |worker, outcome| {
                let mut state: OwnedMutexGuard<SessionState> = state;
                let whole = outcome.status == TurnStatus::Completed
                    && matches!(outcome.stop_reason, Some(StopReason::EndTurn) | None)
                    && worker.broken().is_none();
                state.transcript = whole.then(|| {
                    client_view.push(HistoryMessage {
                        role: Role::Assistant,
                        content: vec![ContentBlock::Text(outcome.streamed_text.clone())],
                    });
                    client_view
                });
                if worker.broken().is_none() {
                    state.worker = Some(worker);
                } else {
                    lock(&info_session.info).container = None;
                }
                lock(&info_session.info).turns += 1;
            });
        Ok(SessionTurn {
            stream,
            forked,
            agentic: session.options.tools,
        })
    }

    async fn lock_state(
        &self,
        session: &Session,
    ) -> Result<OwnedMutexGuard<SessionState>, SessionError> {
        match self.inner.config.on_busy {
            BusyPolicy::Reject => session
                .state
                .clone()
                .try_lock_owned()
                .map_err(|_| SessionError::Busy(session.id.clone())),
            BusyPolicy::Wait => {
                let limit = self.inner.pool.config().checkout_timeout;
                tokio::time::timeout(limit, session.state.clone().lock_owned())
                    .await
                    .map_err(|_| SessionError::Busy(session.id.clone()))
            }
        }
    }

    fn summary(&self, session: &Session) -> SessionSummary {
        let info = lock(&session.info).clone();
        SessionSummary {
            id: session.id.clone(),
            created: unix(session.created),
            last_used: unix(info.last_used_wall),
            model: info.model,
            turns: info.turns,
            forks: info.forks,
            tools: session.options.tools,
            container: info.container,
            volume: lock(&session.workspace).volume.clone(),
        }
    }

    /// How many sessions exist, of all owners.
    pub fn count(&self) -> usize {
        lock(&self.inner.sessions).len()
    }

    /// The sessions of `owner`, by id.
    pub fn list(&self, owner: &OwnerKey) -> Vec<SessionSummary> {
        let sessions: Vec<Arc<Session>> = lock(&self.inner.sessions)
            .values()
            .filter(|s| s.owner == *owner)
            .cloned()
            .collect();
        let mut out: Vec<SessionSummary> = sessions.iter().map(|s| self.summary(s)).collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    pub fn describe(&self, owner: &OwnerKey, id: &str) -> Result<SessionSummary, SessionError> {
        let session = self.get(owner, id)?;
        Ok(self.summary(&session))
    }

    /// Whether the session's container is running, asked of the engine.
    pub async fn container_running(&self, owner: &OwnerKey, id: &str) -> bool {
        let runtime = self.inner.pool.runtime();
        let instance = self.instance();
        let Ok(session) = self.get(owner, id) else {
            return false;
        };
        let label = lock(&session.workspace).session_id.clone();
        runtime
            .list_containers(&[(LABEL_INSTANCE, &instance), (LABEL_SESSION, &label)])
            .await
            .map(|c| c.iter().any(|c| c.running))
            .unwrap_or(false)
    }

    /// Ends a session of `owner`: removes its container and, unless configured to keep
    /// them, its volume.
    pub async fn end(&self, owner: &OwnerKey, id: &str) -> Result<(), SessionError> {
        validate_id(id)?;
        self.end_key(&session_key(owner, id)).await
    }

    async fn end_key(&self, key: &str) -> Result<(), SessionError> {
        let session = lock(&self.inner.sessions).remove(key).ok_or_else(|| {
            SessionError::NotFound(key.split_once('.').map_or(key, |(_, id)| id).to_string())
        })?;
        let id = &session.id;
        let runtime = self.inner.pool.runtime();
        let instance = self.instance();
        // Take the worker if the session is idle; a running turn fails when its container goes.
        if let Ok(mut state) = session.state.clone().try_lock_owned() {
            if let Some(worker) = state.worker.take() {
                worker.remove().await;
            }
        }
        let workspace = lock(&session.workspace).clone();
        let containers = runtime
            .list_containers(&[
                (LABEL_INSTANCE, &instance),
                (LABEL_SESSION, &workspace.session_id),
            ])
            .await
            .map_err(|e| SessionError::Container(e.to_string()))?;
        for c in containers {
            runtime
                .remove_container(&c.id)
                .await
                .map_err(|e| SessionError::Container(e.to_string()))?;
        }
        if !self.inner.config.keep_volumes {
            runtime
                .remove_volume(&workspace.volume)
                .await
                .map_err(|e| SessionError::Container(e.to_string()))?;
        }
        tracing::info!(session = %id, "session ended");
        Ok(())
    }

    /// Ends the sessions idle past the TTL.
    async fn expire(&self) {
        let ttl = self.inner.config.ttl;
        let expired: Vec<String> = lock(&self.inner.sessions)
            .values()
            .filter(|s| lock(&s.info).last_used.elapsed() >= ttl && s.state.try_lock().is_ok())
            .map(|s| s.key.clone())
            .collect();
        for key in expired {
            if let Err(e) = self.end_key(&key).await {
                tracing::warn!(session = %key, cause = %e, "ending an expired session");
            }
        }
    }

    async fn container_of(&self, owner: &OwnerKey, id: &str) -> Result<String, SessionError> {
        let session = self.get(owner, id)?;
        if let Some(container) = lock(&session.info).container.clone() {
            return Ok(container);
        }
        let mut state = self.lock_state(&session).await?;
        self.ensure_worker(&session, &mut state).await?;
        lock(&session.info)
            .container
            .clone()
            .ok_or_else(|| SessionError::Container("no container".into()))
    }

    /// A script run on the workspace: `$1` is the workspace, `$2`… are `args`.
    fn file_command(&self, script: &str, args: &[&str]) -> ExecSpec {
        let sandbox = &self.inner.pool.settings().sandbox;
        let mut cmd = vec![
            "bash".to_string(),
            "-c".to_string(),
            script.to_string(),
            "ccpool-files".to_string(),
            sandbox.workspace.clone(),
        ];
        cmd.extend(args.iter().map(|a| a.to_string()));
        ExecSpec {
            cmd,
            env: Vec::new(),
            user: Some(sandbox.user.clone()),
            working_dir: None,
        }
    }

    /// Opens a file of the session's workspace for reading, as a stream: the file is never
    /// held in memory whole. Symlinks that lead out of the workspace are refused. The script
    /// checks the path, then prints `ok SIZE` and the file on one exec, so what is checked is
    /// what is read.
    pub async fn read_file(
        &self,
        owner: &OwnerKey,
        id: &str,
        path: &str,
    ) -> Result<WorkspaceFile, SessionError> {
        use futures::StreamExt;
        validate_path(path)?;
        let container = self.container_of(owner, id).await?;
        let script = r#"p=$(realpath -e -- "$1/$2" 2>/dev/null) || exit 4
case "$p" in "$1"/*) ;; *) exit 3 ;; esac
[ -f "$p" ] || exit 4
exec 3<"$p" || exit 4
[ "$(readlink -e /proc/$$/fd/3)" = "$p" ] && [ -f /proc/$$/fd/3 ] || exit 3
echo "ok $(stat -L -c %s /proc/$$/fd/3)"
exec cat <&3"#;
        let runtime = self.inner.pool.runtime();
        let mut process = runtime
            .exec(&container, &self.file_command(script, &[path]))
            .await
            .map_err(|e| SessionError::Container(e.to_string()))?;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut process.stdin).await;
        // The header line, then whatever of the content came with it.
        let mut head = Vec::new();
        let header_end = loop {
            if let Some(end) = head.iter().position(|b| *b == b'\n') {
                break Some(end);
            }
            if head.len() > 64 {
                break None;
            }
            match process.output.next().await {
                Some(Ok(ExecOutput::Stdout(bytes))) => head.extend_from_slice(&bytes),
                Some(Ok(ExecOutput::Stderr(_))) => {}
                Some(Err(e)) => return Err(SessionError::Container(e.to_string())),
                None => break None,
            }
        };
        let size = header_end.and_then(|end| {
            std::str::from_utf8(&head[..end])
                .ok()?
                .strip_prefix("ok ")?
                .parse::<u64>()
                .ok()
        });
        let Some(size) = size else {
            while process.output.next().await.is_some() {}
            let code = runtime
                .exec_exit_code(&process.id)
                .await
                .map_err(|e| SessionError::Container(e.to_string()))?;
            return Err(match code {
                Some(3) => SessionError::OutsideWorkspace(path.to_string()),
                Some(4) => SessionError::FileNotFound(path.to_string()),
                code => SessionError::Container(format!("reading a file ended with {code:?}")),
            });
        };
        let rest = bytes::Bytes::copy_from_slice(&head[header_end.unwrap_or(0) + 1..]);
        let content = process.output.filter_map(|frame| async move {
            match frame {
                Ok(ExecOutput::Stdout(bytes)) => Some(Ok(bytes)),
                Ok(ExecOutput::Stderr(_)) => None,
                Err(e) => Some(Err(std::io::Error::other(e))),
            }
        });
        let body = futures::stream::iter((!rest.is_empty()).then_some(Ok(rest)))
            .chain(content)
            .boxed();
        Ok(WorkspaceFile { size, body })
    }

    /// Writes a file into the session's workspace from a stream, creating directories. The
    /// content never sits in memory whole. A file over `max_bytes`, or one that would take the
    /// workspace over its quota, is refused and leaves nothing behind; symlinks that lead out
    /// of the workspace are refused. Returns the bytes written.
    pub async fn write_file<S, E>(
        &self,
        owner: &OwnerKey,
        id: &str,
        path: &str,
        mut content: S,
        max_bytes: u64,
    ) -> Result<u64, SessionError>
    where
        S: futures::Stream<Item = Result<bytes::Bytes, E>> + Unpin + Send,
    {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        validate_path(path)?;
        let container = self.container_of(owner, id).await?;
        // The content goes to a temporary file that replaces the target only when whole and
        // within the limits (`head` stops reading one byte past what is allowed).
        let script = r#"p=$(realpath -m -- "$1/$2") || exit 3
case "$p" in "$1"/*) ;; *) exit 3 ;; esac
[ ! -L "$p" ] || exit 3
[ ! -d "$p" ] || exit 5
mkdir -p -- "$(dirname -- "$p")" || exit 5
d=$(realpath -e -- "$(dirname -- "$p")") || exit 3
case "$d/" in "$1"/*) ;; *) exit 3 ;; esac
used=$(du -sb -- "$1" | cut -f1)
old=0; [ -f "$p" ] && old=$(stat -c %s -- "$p")
room=$(( $3 - used + old )); [ "$room" -ge 0 ] || room=0
limit=$room; [ "$4" -lt "$limit" ] && limit=$4
t=$(mktemp -p "$d" .ccpool-upload.XXXXXX) || exit 5
head -c "$((limit + 1))" > "$t" || { rm -f -- "$t"; exit 5; }
size=$(stat -c %s -- "$t")
if [ "$size" -gt "$limit" ]; then rm -f -- "$t"; [ "$size" -gt "$4" ] && exit 7; exit 6; fi
mv -fT -- "$t" "$p" || { rm -f -- "$t"; exit 5; }
echo "$size""#;
        let quota = self.inner.config.workspace_quota_bytes;
        let runtime = self.inner.pool.runtime();
        let args = [path, &quota.to_string(), &max_bytes.to_string()];
        let mut process = runtime
            .exec(&container, &self.file_command(script, &args))
            .await
            .map_err(|e| SessionError::Container(e.to_string()))?;
        let mut sent: u64 = 0;
        let mut client_failed = false;
        while let Some(chunk) = content.next().await {
            let Ok(chunk) = chunk else {
                client_failed = true;
                break;
            };
            sent += chunk.len() as u64;
            // A write fails once the script has stopped reading: its exit code tells why.
            if process.stdin.write_all(&chunk).await.is_err() || sent > max_bytes {
                break;
            }
        }
        if client_failed {
            // The upload broke off: drop the exec without a clean end of input, and say so.
            drop(process);
            return Err(SessionError::Container("the upload broke off".into()));
        }
        let _ = process.stdin.shutdown().await;
        let mut stdout = Vec::new();
        while let Some(frame) = process.output.next().await {
            if let Ok(ExecOutput::Stdout(bytes)) = frame {
                if stdout.len() < 64 {
                    stdout.extend_from_slice(&bytes);
                }
            }
        }
        let code = runtime
            .exec_exit_code(&process.id)
            .await
            .map_err(|e| SessionError::Container(e.to_string()))?;
        match code {
            Some(0) => Ok(String::from_utf8_lossy(&stdout)
                .trim()
                .parse()
                .unwrap_or(sent)),
            Some(3) => Err(SessionError::OutsideWorkspace(path.to_string())),
            Some(6) => Err(SessionError::QuotaExceeded(quota)),
            Some(7) => Err(SessionError::FileTooLarge(max_bytes)),
            code => Err(SessionError::Container(format!(
                "writing a file ended with {code:?}"
            ))),
        }
    }

    /// Ends every session (their containers; volumes unless kept) and stops the reaper.
    pub async fn shutdown(&self) {
        self.inner.pool.prewarm_sessions(0);
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        let keys: Vec<String> = lock(&self.inner.sessions).keys().cloned().collect();
        for key in keys {
            if let Err(e) = self.end_key(&key).await {
                tracing::warn!(session = %key, cause = %e, "ending a session at shutdown");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: Role, text: &str) -> HistoryMessage {
        HistoryMessage {
            role,
            content: vec![ContentBlock::Text(text.into())],
        }
    }

    /// A pool over the fake runtime and sessions that keep one worker pre-warmed.
    async fn prewarming_sessions() -> (crate::fake::FakeRuntime, WarmPool, Sessions) {
        let fake = crate::fake::FakeRuntime::new();
        let settings = crate::worker::WorkerSettings {
            instance_id: format!(
                "sessions-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            ..crate::worker::WorkerSettings::default()
        };
        let config = crate::pool::PoolConfig {
            max_workers: 4,
            warm_default: 1,
            checkout_timeout: Duration::from_secs(5),
            ..crate::pool::PoolConfig::default()
        };
        let pool = WarmPool::start(
            Arc::new(fake.clone()),
            settings,
            config,
            LaunchProfile::default(),
        )
        .await
        .unwrap();
        let sessions = Sessions::start(
            pool.clone(),
            SessionConfig {
                prewarm: 1,
                ..SessionConfig::default()
            },
        )
        .await
        .unwrap();
        (fake, pool, sessions)
    }

    /// Waits (at most 5 s) until `n` pre-warmed session workers are ready.
    async fn prewarmed(pool: &WarmPool, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.status().prewarmed_sessions != n {
            assert!(Instant::now() < deadline, "{:?}", pool.status());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_new_session_claims_a_prewarmed_worker_and_its_fresh_volume() {
        let (fake, pool, sessions) = prewarming_sessions().await;
        // Each container's CPU time, sample by sample: busy twice, then quiet.
        let ms = Duration::from_millis;
        fake.set_cpu_samples(vec![ms(0), ms(300), ms(600), ms(620), ms(900)]);
        prewarmed(&pool, 1).await;
        let instance = pool.settings().instance_id.clone();
        let before = fake.container_ids();
        let (volume, labels) = fake.volumes().pop().expect("the pre-warmed volume");
        assert!(
            volume.starts_with(&format!("ccpool.{instance}.prewarmed-")),
            "{volume}"
        );
        assert_eq!(
            volume.matches('.').count(),
            2,
            "never a session's name: {volume}"
        );

        let owner = OwnerKey::new("k1");
        let turn = sessions
            .start_turn(
                &owner,
                "s1",
                &LaunchProfile::default(),
                TurnRequest::text("hi"),
                SessionOptions::default(),
            )
            .await
            .unwrap();
        let (_, outcome) = turn.stream.collect_all().await;
        assert!(outcome.is_success(), "{outcome:?}");
        let summary = sessions.describe(&owner, "s1").unwrap();
        let container = summary.container.clone().unwrap();
        assert!(
            before.contains(&container),
            "the pre-warmed container served it"
        );
        assert_eq!(
            (
                fake.cpu_samples_read(&container),
                fake.cpu_shares_of(&container)
            ),
            (4, vec![Some(128), Some(1024)]),
            "it was ready once quiet, and then at the usual CPU weight"
        );
        assert_eq!(summary.volume, volume);
        assert_eq!(
            fake.labels_of(&container).unwrap()[LABEL_SESSION],
            labels[LABEL_SESSION]
        );
        assert!(sessions.container_running(&owner, "s1").await);
        assert!(
            !sessions.container_running(&OwnerKey::new("k2"), "s1").await,
            "another owner never finds it"
        );

        // Another is pre-warmed for the next session; ending this one removes its volume.
        prewarmed(&pool, 1).await;
        sessions.end(&owner, "s1").await.unwrap();
        assert!(!fake.volumes().iter().any(|(v, _)| *v == volume));
        assert!(!fake.container_ids().contains(&container));

        // At shutdown the unclaimed one goes with its volume.
        sessions.shutdown().await;
        pool.shutdown(Duration::from_secs(2)).await;
        assert!(fake.volumes().is_empty(), "{:?}", fake.volumes());
        assert!(fake.container_ids().is_empty());
    }

    #[tokio::test]
    async fn a_session_of_another_profile_starts_its_own_and_the_next_prewarmed_follow_it() {
        let (fake, pool, sessions) = prewarming_sessions().await;
        prewarmed(&pool, 1).await;
        let before = fake.container_ids();
        let owner = OwnerKey::new("k1");
        let options = SessionOptions {
            system_prompt: Some("Be brief.".into()),
            ..SessionOptions::default()
        };
        let created = sessions.create(&owner, "own", options).await.unwrap();
        assert!(!before.contains(&created.container.clone().unwrap()));
        let instance = pool.settings().instance_id.clone();
        assert_eq!(created.volume, format!("ccpool.{instance}.k1.own"));
        // The pre-warmed worker of the old profile is replaced by one of the new.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let prewarmed_profile = fake
                .container_ids()
                .iter()
                .filter_map(|c| fake.labels_of(c))
                .filter(|l| {
                    l.get(LABEL_SESSION)
                        .is_some_and(|s| s.starts_with("prewarmed-"))
                })
                .map(|l| l[crate::runtime::LABEL_PROFILE].clone())
                .collect::<Vec<_>>();
            let wanted = LaunchProfile {
                system_prompt: Some("Be brief.".into()),
                ..LaunchProfile::default()
            };
            if prewarmed_profile == [wanted.fingerprint()] {
                break;
            }
            assert!(Instant::now() < deadline, "{prewarmed_profile:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sessions.shutdown().await;
        pool.shutdown(Duration::from_secs(2)).await;
        assert!(fake.volumes().is_empty(), "{:?}", fake.volumes());
    }

    #[test]
    fn ids_and_paths_are_validated() {
        for ok in ["a", "session-1", "A_b-9", &"x".repeat(64)] {
            assert!(validate_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "../x", "a/b", &"x".repeat(65), "é"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
        for ok in ["a.txt", "dir/b.md", "deep/er/c"] {
            assert!(validate_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../b",
            "a//b",
            "./a",
            "a\\b",
            "a/..",
        ] {
            assert!(validate_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_history_that_extends_the_session_sends_only_the_new_user_turns() {
        let known = vec![msg(Role::User, "q1"), msg(Role::Assistant, "a1")];
        let mut history = known.clone();
        history.push(msg(Role::User, "q2 part one"));
        assert_eq!(
            continuation(Some(&known), &known),
            Continuation::Append(Vec::new())
        );
        assert_eq!(
            continuation(Some(&known), &history),
            Continuation::Append(vec![ContentBlock::Text("q2 part one".into())])
        );
    }

    #[test]
    fn an_edited_or_unknown_history_replays_and_an_empty_one_restarts() {
        let known = vec![msg(Role::User, "q1"), msg(Role::Assistant, "a1")];
        let edited = vec![msg(Role::User, "q1 edited"), msg(Role::Assistant, "a1")];
        assert_eq!(continuation(Some(&known), &edited), Continuation::Replay);
        let regenerated = vec![msg(Role::User, "q1"), msg(Role::Assistant, "another a1")];
        assert_eq!(
            continuation(Some(&known), &regenerated),
            Continuation::Replay
        );
        assert_eq!(continuation(None, &known), Continuation::Replay);
        assert_eq!(continuation(Some(&known), &[]), Continuation::Restart);
        assert_eq!(
            continuation(Some(&[]), &[]),
            Continuation::Append(Vec::new())
        );
    }
}
