//! Stage roles: what a team's stage names mean. Stage names differ between
//! teams and tools ("In Review", "QA", "pending approval"), so the reports
//! and the rules never compare a stage name with a fixed one: [`StageRoles`]
//! maps the names, by default those of the usual task tools or as
//! `[report.stages]` lists them, onto the seven [`Role`]s. The ranked roles
//! are ordered (brief < work < review < approved < launch < done) so "back
//! to an earlier stage" has a meaning; `blocked` is off the line.

use std::collections::HashMap;

/// What a stage means to the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Brief,
    Work,
    Review,
    Approved,
    Launch,
    Done,
    Blocked,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Brief,
        Role::Work,
        Role::Review,
        Role::Approved,
        Role::Launch,
        Role::Done,
        Role::Blocked,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Brief => "brief",
            Role::Work => "work",
            Role::Review => "review",
            Role::Approved => "approved",
            Role::Launch => "launch",
            Role::Done => "done",
            Role::Blocked => "blocked",
        }
    }

    pub fn from_name(name: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|role| role.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Role::ALL.iter().map(|r| r.name()).collect();
                format!(
                    "`{name}` is not a stage role: the roles are {}",
                    names.join(", ")
                )
            })
    }

    /// The place on the line from brief to done; `blocked` has none.
    pub fn rank(self) -> Option<u8> {
        match self {
            Role::Blocked => None,
            ranked => Some(ranked as u8),
        }
    }

    /// Whether an item in this role has finished its way (launched or done).
    pub fn finishes(self) -> bool {
        matches!(self, Role::Launch | Role::Done)
    }

    /// The stage names a role has when the config does not say: the usual
    /// column and status names of Jira, Asana, Trello, Workfront and
    /// Monday boards.
    pub fn default_stages(self) -> &'static [&'static str] {
        match self {
            Role::Brief => &[
                "brief",
                "backlog",
                "intake",
                "requested",
                "new",
                "to do",
                "todo",
                "open",
            ],
            Role::Work => &[
                "draft",
                "in progress",
                "doing",
                "working on it",
                "production",
                "changes requested",
                "rework",
                "revise",
                "rejected",
            ],
            Role::Review => &[
                "review",
                "in review",
                "ready for review",
                "pending review",
                "legal review",
                "approval",
                "pending approval",
                "awaiting approval",
                "qa",
            ],
            Role::Approved => &["approved", "ready", "ready to launch", "scheduled"],
            Role::Launch => &["launched", "live", "sent", "published"],
            Role::Done => &["done", "complete", "completed", "closed", "shipped"],
            Role::Blocked => &["blocked", "on hold", "waiting"],
        }
    }
}

/// Stage names in the form they are compared: lower case, `_` and `-` as spaces.
pub fn normalize_stage(stage: &str) -> String {
    stage
        .trim()
        .chars()
        .map(|c| match c {
            '_' | '-' => ' ',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// The team's stage names mapped onto roles, and the fields the metrics read.
#[derive(Debug, Clone)]
pub struct StageRoles {
    roles: HashMap<String, Role>,
    /// The roles the config lists, with their names as written.
    listed: Vec<(Role, Vec<String>)>,
    /// The field holding an item's planned launch (`launch_at`): a channel's
    /// own, else the campaign's.
    pub planned_field: String,
    /// A member of an event's data saying who acted (`actor`): when present,
    /// only the new owner's own move ends a handoff.
    pub actor_field: String,
    /// A member of an event's data carrying a review decision (`approval`:
    /// `approved`, `changes_requested`, `rejected`), as approval tools send it.
    pub approval_field: String,
}

impl Default for StageRoles {
    fn default() -> StageRoles {
        StageRoles::new(Role::ALL.map(|role| {
            (
                role,
                role.default_stages()
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
            )
        }))
        .expect("the default stage names are each in one role")
    }
}

impl StageRoles {
    /// Roles with their stage names. A name in two roles is an error naming both.
    pub fn new(roles: impl IntoIterator<Item = (Role, Vec<String>)>) -> Result<StageRoles, String> {
        let mut by_name: HashMap<String, Role> = HashMap::new();
        for (role, names) in roles {
            for name in names {
                let key = normalize_stage(&name);
                if let Some(other) = by_name.insert(key, role)
                    && other != role
                {
                    return Err(format!(
                        "stage `{name}` is in both `{}` and `{}`",
                        other.name(),
                        role.name()
                    ));
                }
            }
        }
        Ok(StageRoles {
            roles: by_name,
            listed: Vec::new(),
            planned_field: "launch_at".into(),
            actor_field: "actor".into(),
            approval_field: "approval".into(),
        })
    }

    /// The default names, with each role the config lists taking exactly
    /// the config's names (and those names leaving any other role's defaults).
    pub fn configured(listed: Vec<(Role, Vec<String>)>) -> Result<StageRoles, String> {
        let taken: Vec<String> = listed
            .iter()
            .flat_map(|(_, names)| names.iter().map(|n| normalize_stage(n)))
            .collect();
        let mut roles = listed.clone();
        for role in Role::ALL {
            if !listed.iter().any(|(r, _)| *r == role) {
                let defaults = role
                    .default_stages()
                    .iter()
                    .filter(|name| !taken.contains(&normalize_stage(name)))
                    .map(ToString::to_string)
                    .collect();
                roles.push((role, defaults));
            }
        }
        let mut stage_roles = StageRoles::new(roles)?;
        stage_roles.listed = listed;
        Ok(stage_roles)
    }

    /// The roles the config lists, with their names as written.
    pub fn listed(&self) -> &[(Role, Vec<String>)] {
        &self.listed
    }

    pub fn role(&self, stage: Option<&str>) -> Option<Role> {
        self.roles.get(&normalize_stage(stage?)).copied()
    }

    /// The stage names mapped to a role, for `converge check`.
    pub fn names(&self, role: Role) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .roles
            .iter()
            .filter(|(_, r)| **r == role)
            .map(|(name, _)| name.as_str())
            .collect();
        names.sort_unstable();
        names
    }
}
