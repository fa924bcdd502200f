"""The tool catalogue of the demo upstream: tools named and shaped like those of GitHub's MCP server.

Every tool has a description, a JSON Schema for its arguments and annotations (read-only or not),
so a gateway sees a realistic `tools/list`. `fake_result` answers a call with deterministic,
plausible JSON: the same arguments always give the same answer, and the answer echoes what was
asked, so tests can tell exactly what reached the upstream.

Three tools (`INTERACTIVE_TOOLS`) talk back to the client while they run (sampling, elicitation,
progress); only their definitions live here, `demo_upstream.py` implements them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import mcp.types as types

Schema = dict[str, Any]


# --- argument schemas -----------------------------------------------------------------------------


def _string(description: str, **keywords: Any) -> Schema:
    return {"type": "string", "description": description, **keywords}


def _integer(description: str, **keywords: Any) -> Schema:
    return {"type": "integer", "description": description, **keywords}


def _boolean(description: str) -> Schema:
    return {"type": "boolean", "description": description}


def _enum(description: str, *values: str) -> Schema:
    return {"type": "string", "description": description, "enum": list(values)}


def _strings(description: str) -> Schema:
    return {"type": "array", "description": description, "items": {"type": "string"}}


OWNER = _string("Repository owner (user or organization login)")
REPO = _string("Repository name")
ORG = _string("Organization login")
QUERY = _string("Search query using GitHub search syntax")
ISSUE_NUMBER = _integer("Issue number", minimum=1)
PULL_NUMBER = _integer("Pull request number", minimum=1)
RUN_ID = _integer("Workflow run ID")
JOB_ID = _integer("Job ID")
ALERT_NUMBER = _integer("Number of the alert")
DISCUSSION_NUMBER = _integer("Discussion number")
PROJECT_NUMBER = _integer("Project number")
BRANCH = _string("Branch name")
SHA = _string("Commit SHA, branch or tag name")
TAG = _string("Tag name")
GIST_ID = _string("Gist ID")
THREAD_ID = _string("Notification thread ID")
PATH = _string("Path of the file or directory in the repository")
SORT_DIRECTION = _enum("Sort direction", "asc", "desc")
PAGINATION = {
    "page": _integer("Page number for pagination (min 1)", minimum=1),
    "perPage": _integer("Results per page for pagination (min 1, max 100)", minimum=1, maximum=100),
}
REPO_ARGS = {"owner": OWNER, "repo": REPO}


# --- the catalogue --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolSpec:
    name: str
    toolset: str
    description: str
    required: dict[str, Schema]
    optional: dict[str, Schema]
    read_only: bool

    def input_schema(self) -> Schema:
        return {
            "type": "object",
            "properties": {**self.required, **self.optional},
            "required": list(self.required),
        }

    def to_mcp_tool(self) -> types.Tool:
        return types.Tool(
            name=self.name,
            description=self.description,
            inputSchema=self.input_schema(),
            annotations=types.ToolAnnotations(
                title=self.name.replace("_", " ").capitalize(),
                readOnlyHint=self.read_only,
                destructiveHint=None if self.read_only else self.name.startswith(("delete_", "remove_")),
            ),
        )


def _read(toolset: str, name: str, description: str, required: dict[str, Schema] | None = None,
          optional: dict[str, Schema] | None = None) -> ToolSpec:
    return ToolSpec(name, toolset, description, required or {}, optional or {}, read_only=True)


def _write(toolset: str, name: str, description: str, required: dict[str, Schema] | None = None,
           optional: dict[str, Schema] | None = None) -> ToolSpec:
    return ToolSpec(name, toolset, description, required or {}, optional or {}, read_only=False)


TOOLS: tuple[ToolSpec, ...] = (
    # context
    _read("context", "get_me", "Get details of the authenticated GitHub user."),
    _read("context", "get_teams", "Get the teams the user is a member of.",
          optional={"user": _string("Login of the user")}),
    _read("context", "get_team_members", "Get the member logins of a team in an organization.",
          {"org": ORG, "team_slug": _string("Team slug")}),
    # repos: reading
    _read("repos", "search_repositories",
          "Find GitHub repositories by name, description, readme, topics or other metadata.", {"query": QUERY},
          {"sort": _enum("Sort field", "stars", "forks", "help-wanted-issues", "updated"), "order": SORT_DIRECTION,
           "minimal_output": _boolean("Return minimal repository data"), **PAGINATION}),
    _read("repos", "get_file_contents", "Get the contents of a file or directory from a GitHub repository.",
          {**REPO_ARGS, "path": PATH}, {"ref": _string("Git ref: branch, tag or pull request ref"),
                                        "sha": _string("Commit SHA; overrides ref")}),
    _read("repos", "list_branches", "List branches in a GitHub repository.", REPO_ARGS, PAGINATION),
    _read("repos", "list_commits", "Get the list of commits of a branch in a GitHub repository.", REPO_ARGS,
          {"sha": SHA, "author": _string("Author username or email"), **PAGINATION}),
    _read("repos", "get_commit", "Get details of a commit, including its diff statistics.", {**REPO_ARGS, "sha": SHA},
          {"include_diff": _boolean("Include the file diffs"), **PAGINATION}),
    _read("repos", "list_tags", "List git tags in a GitHub repository.", REPO_ARGS, PAGINATION),
    _read("repos", "get_tag", "Get details about a specific git tag.", {**REPO_ARGS, "tag": TAG}),
    _read("repos", "list_releases", "List releases in a GitHub repository.", REPO_ARGS, PAGINATION),
    _read("repos", "get_latest_release", "Get the latest release of a GitHub repository.", REPO_ARGS),
    _read("repos", "get_release_by_tag", "Get a release by its tag name.", {**REPO_ARGS, "tag": TAG}),
    _read("repos", "search_code",
          "Fast and precise code search across all GitHub repositories using GitHub's native search engine.",
          {"query": QUERY}, {"sort": _enum("Sort field", "indexed"), "order": SORT_DIRECTION, **PAGINATION}),
    _read("stargazers", "list_starred_repositories",
          "List repositories starred by the authenticated user or a given user.",
          optional={"username": _string("Login of the user; defaults to the authenticated user"), **PAGINATION}),
    # repos: writing
    _write("repos", "create_or_update_file", "Create or update a single file in a GitHub repository.",
           {**REPO_ARGS, "path": PATH, "content": _string("Content of the file"), "message": _string("Commit message"),
            "branch": BRANCH}, {"sha": _string("Blob SHA of the file being replaced (required for updates)")}),
    _write("repos", "delete_file", "Delete a file from a GitHub repository.",
           {**REPO_ARGS, "path": PATH, "message": _string("Commit message"), "branch": BRANCH}),
    _write("repos", "push_files", "Push multiple files to a GitHub repository in a single commit.",
           {**REPO_ARGS, "branch": BRANCH, "message": _string("Commit message"),
            "files": {"type": "array", "description": "Files to push",
                      "items": {"type": "object", "required": ["path", "content"],
                                "properties": {"path": _string("Path of the file"),
                                               "content": _string("Content of the file")}}}}),
    _write("repos", "create_repository", "Create a new GitHub repository in your account or an organization.",
           {"name": _string("Repository name")},
           {"description": _string("Repository description"), "private": _boolean("Whether the repository is private"),
            "autoInit": _boolean("Initialize with a README"),
            "organization": _string("Organization to create the repository in")}),
    _write("repos", "fork_repository", "Fork a GitHub repository to your account or an organization.", REPO_ARGS,
           {"organization": _string("Organization to fork to")}),
    _write("repos", "create_branch", "Create a new branch in a GitHub repository.", {**REPO_ARGS, "branch": BRANCH},
           {"from_branch": _string("Source branch; defaults to the repository's default branch")}),
    _write("stargazers", "star_repository", "Star a GitHub repository.", REPO_ARGS),
    _write("stargazers", "unstar_repository", "Unstar a GitHub repository.", REPO_ARGS),
    _write("repos", "delete_repository", "Delete a GitHub repository. Asks the user to confirm first.", REPO_ARGS),
    # issues
    _read("issues", "get_issue", "Get details of a specific issue in a GitHub repository.",
          {**REPO_ARGS, "issue_number": ISSUE_NUMBER}),
    _read("issues", "get_issue_comments", "Get comments for a specific issue.",
          {**REPO_ARGS, "issue_number": ISSUE_NUMBER}, PAGINATION),
    _read("issues", "list_issues", "List issues in a GitHub repository.", REPO_ARGS,
          {"state": _enum("Filter by state", "OPEN", "CLOSED"), "labels": _strings("Filter by labels"),
           "orderBy": _enum("Order issues by field", "CREATED_AT", "UPDATED_AT", "COMMENTS"),
           "direction": _enum("Order direction", "ASC", "DESC"), "since": _string("ISO 8601 timestamp"),
           "after": _string("Cursor for pagination"), "perPage": PAGINATION["perPage"]}),
    _read("issues", "search_issues", "Search for issues in GitHub repositories using issues search syntax.",
          {"query": QUERY}, {"owner": OWNER, "repo": REPO, "order": SORT_DIRECTION, **PAGINATION}),
    _read("issues", "list_sub_issues", "List sub-issues of a specific issue.",
          {**REPO_ARGS, "issue_number": ISSUE_NUMBER}, PAGINATION),
    _read("issues", "list_issue_types", "List the issue types supported by an organization.", {"owner": ORG}),
    _read("issues", "summarize_issue", "Summarize an issue. The summary is written by the client's language model "
          "(the server sends a sampling request).", {**REPO_ARGS, "issue_number": ISSUE_NUMBER}),
    _write("issues", "create_issue", "Create a new issue in a GitHub repository.",
           {**REPO_ARGS, "title": _string("Issue title")},
           {"body": _string("Issue body"), "assignees": _strings("Usernames to assign"),
            "labels": _strings("Labels to apply"), "milestone": _integer("Milestone number"),
            "type": _string("Issue type")}),
    _write("issues", "update_issue", "Update an existing issue in a GitHub repository.",
           {**REPO_ARGS, "issue_number": ISSUE_NUMBER},
           {"title": _string("New title"), "body": _string("New body"), "state": _enum("New state", "open", "closed"),
            "labels": _strings("New labels"), "assignees": _strings("New assignees")}),
    _write("issues", "add_issue_comment", "Add a comment to a specific issue in a GitHub repository.",
           {**REPO_ARGS, "issue_number": ISSUE_NUMBER, "body": _string("Comment text")}),
    _write("issues", "add_sub_issue", "Add a sub-issue to a parent issue.",
           {**REPO_ARGS, "issue_number": ISSUE_NUMBER, "sub_issue_id": _integer("ID of the sub-issue")},
           {"replace_parent": _boolean("Move the sub-issue from its current parent")}),
    _write("issues", "remove_sub_issue", "Remove a sub-issue from a parent issue.",
           {**REPO_ARGS, "issue_number": ISSUE_NUMBER, "sub_issue_id": _integer("ID of the sub-issue")}),
    _write("issues", "reprioritize_sub_issue", "Move a sub-issue to another position in its parent's list.",
           {**REPO_ARGS, "issue_number": ISSUE_NUMBER, "sub_issue_id": _integer("ID of the sub-issue")},
           {"after_id": _integer("Place after this sub-issue"), "before_id": _integer("Place before this sub-issue")}),
    _write("issues", "assign_copilot_to_issue",
           "Assign Copilot to an issue so that it opens a pull request resolving it.",
           {**REPO_ARGS, "issueNumber": ISSUE_NUMBER}),
    # pull requests
    _read("pull_requests", "get_pull_request", "Get details of a specific pull request.",
          {**REPO_ARGS, "pullNumber": PULL_NUMBER}),
    _read("pull_requests", "list_pull_requests", "List pull requests in a GitHub repository.", REPO_ARGS,
          {"state": _enum("Filter by state", "open", "closed", "all"),
           "head": _string("Filter by head user/org and branch"), "base": _string("Filter by base branch"),
           "sort": _enum("Sort by", "created", "updated", "popularity", "long-running"),
           "direction": SORT_DIRECTION, **PAGINATION}),
    _read("pull_requests", "search_pull_requests", "Search for pull requests in GitHub repositories.", {"query": QUERY},
          {"owner": OWNER, "repo": REPO, "order": SORT_DIRECTION, **PAGINATION}),
    _read("pull_requests", "get_pull_request_files", "Get the files changed in a pull request.",
          {**REPO_ARGS, "pullNumber": PULL_NUMBER}, PAGINATION),
    _read("pull_requests", "get_pull_request_diff", "Get the diff of a pull request.",
          {**REPO_ARGS, "pullNumber": PULL_NUMBER}),
    _read("pull_requests", "get_pull_request_status", "Get the combined status of all status checks of a pull request.",
          {**REPO_ARGS, "pullNumber": PULL_NUMBER}),
    _read("pull_requests", "get_pull_request_comments", "Get the review comments of a pull request.",
          {**REPO_ARGS, "pullNumber": PULL_NUMBER}),
    _read("pull_requests", "get_pull_request_reviews", "Get the reviews of a pull request.",
          {**REPO_ARGS, "pullNumber": PULL_NUMBER}),
    _write("pull_requests", "create_pull_request", "Create a new pull request in a GitHub repository.",
           {**REPO_ARGS, "title": _string("PR title"), "head": _string("Branch containing the changes"),
            "base": _string("Branch to merge into")},
           {"body": _string("PR description"), "draft": _boolean("Create as draft"),
            "maintainer_can_modify": _boolean("Allow maintainer edits")}),
    _write("pull_requests", "update_pull_request", "Update an existing pull request.",
           {**REPO_ARGS, "pullNumber": PULL_NUMBER},
           {"title": _string("New title"), "body": _string("New description"),
            "state": _enum("New state", "open", "closed"),
            "base": _string("New base branch"), "draft": _boolean("Mark as draft or ready for review"),
            "reviewers": _strings("Usernames to request reviews from")}),
    _write("pull_requests", "merge_pull_request", "Merge a pull request.", {**REPO_ARGS, "pullNumber": PULL_NUMBER},
           {"commit_title": _string("Title for the merge commit"),
            "commit_message": _string("Extra detail for the merge commit"),
            "merge_method": _enum("Merge method", "merge", "squash", "rebase")}),
    _write("pull_requests", "update_pull_request_branch",
           "Update a pull request branch with the latest changes from its base.",
           {**REPO_ARGS, "pullNumber": PULL_NUMBER}, {"expectedHeadSha": _string("Expected SHA of the head ref")}),
    _write("pull_requests", "request_copilot_review", "Request a GitHub Copilot code review for a pull request.",
           {**REPO_ARGS, "pullNumber": PULL_NUMBER}),
    _write("pull_requests", "create_and_submit_pull_request_review", "Create and submit a review for a pull request.",
           {**REPO_ARGS, "pullNumber": PULL_NUMBER, "body": _string("Review comment text"),
            "event": _enum("Review action", "APPROVE", "REQUEST_CHANGES", "COMMENT")},
           {"commitID": _string("SHA of the commit to review")}),
    _write("pull_requests", "create_pending_pull_request_review", "Create a pending review for a pull request.",
           {**REPO_ARGS, "pullNumber": PULL_NUMBER}, {"commitID": _string("SHA of the commit to review")}),
    _write("pull_requests", "add_comment_to_pending_review",
           "Add a review comment to the requester's latest pending review.",
           {**REPO_ARGS, "pullNumber": PULL_NUMBER, "path": PATH, "body": _string("Comment text"),
            "subjectType": _enum("Level the comment targets", "FILE", "LINE")},
           {"line": _integer("Line of the diff the comment applies to"),
            "side": _enum("Side of the diff", "LEFT", "RIGHT")}),
    _write("pull_requests", "submit_pending_pull_request_review", "Submit the requester's latest pending review.",
           {**REPO_ARGS, "pullNumber": PULL_NUMBER,
            "event": _enum("Review action", "APPROVE", "REQUEST_CHANGES", "COMMENT")},
           {"body": _string("Review comment text")}),
    _write("pull_requests", "delete_pending_pull_request_review", "Delete the requester's latest pending review.",
           {**REPO_ARGS, "pullNumber": PULL_NUMBER}),
    # users and organizations
    _read("users", "search_users", "Find GitHub users by username, real name or other profile information.",
          {"query": QUERY},
          {"sort": _enum("Sort field", "followers", "repositories", "joined"), "order": SORT_DIRECTION, **PAGINATION}),
    _read("orgs", "search_orgs", "Find GitHub organizations by name, location or other metadata.", {"query": QUERY},
          {"sort": _enum("Sort field", "followers", "repositories", "joined"), "order": SORT_DIRECTION, **PAGINATION}),
    # actions
    _read("actions", "list_workflows", "List the workflows in a repository.", REPO_ARGS, PAGINATION),
    _read("actions", "list_workflow_runs", "List the runs of a workflow.",
          {**REPO_ARGS, "workflow_id": _string("Workflow ID or file name")},
          {"branch": BRANCH, "status": _enum("Run status", "queued", "in_progress", "completed"), **PAGINATION}),
    _read("actions", "get_workflow_run", "Get details of a workflow run.", {**REPO_ARGS, "run_id": RUN_ID}),
    _read("actions", "get_workflow_run_logs", "Download the logs of a workflow run.", {**REPO_ARGS, "run_id": RUN_ID}),
    _read("actions", "get_workflow_run_usage", "Get the billable time of a workflow run.",
          {**REPO_ARGS, "run_id": RUN_ID}),
    _read("actions", "list_workflow_jobs", "List the jobs of a workflow run.", {**REPO_ARGS, "run_id": RUN_ID},
          {"filter": _enum("Which attempts to include", "latest", "all"), **PAGINATION}),
    _read("actions", "get_job_logs", "Get the logs of a workflow job, or of all failed jobs of a run.", REPO_ARGS,
          {"job_id": JOB_ID, "run_id": RUN_ID, "failed_only": _boolean("Only the failed jobs of run_id"),
           "tail_lines": _integer("Number of lines to return from the end of the log")}),
    _read("actions", "list_workflow_run_artifacts", "List the artifacts of a workflow run.",
          {**REPO_ARGS, "run_id": RUN_ID}, PAGINATION),
    _read("actions", "download_workflow_run_artifact", "Get a download URL for a workflow run artifact.",
          {**REPO_ARGS, "artifact_id": _integer("Artifact ID")}),
    _write("actions", "run_workflow", "Run an Actions workflow by ID or file name. Reports each step as a progress "
           "notification while it runs.",
           {**REPO_ARGS, "workflow_id": _string("Workflow ID or file name")},
           {"ref": _string("Git ref to run the workflow on"),
            "steps": _integer("Number of steps to run", minimum=0, maximum=1000, default=5),
            "delay_ms": _integer("Duration of each step in milliseconds", minimum=0, maximum=60000, default=200)}),
    _write("actions", "rerun_workflow_run", "Re-run an entire workflow run.", {**REPO_ARGS, "run_id": RUN_ID}),
    _write("actions", "rerun_failed_jobs", "Re-run only the failed jobs of a workflow run.",
           {**REPO_ARGS, "run_id": RUN_ID}),
    _write("actions", "cancel_workflow_run", "Cancel a workflow run.", {**REPO_ARGS, "run_id": RUN_ID}),
    _write("actions", "delete_workflow_run_logs", "Delete the logs of a workflow run.",
           {**REPO_ARGS, "run_id": RUN_ID}),
    # code security, secret protection, dependabot, advisories
    _read("code_security", "list_code_scanning_alerts", "List code scanning alerts in a repository.", REPO_ARGS,
          {"state": _enum("Alert state", "open", "closed", "dismissed", "fixed"), "ref": _string("Git ref"),
           "severity": _enum("Severity", "critical", "high", "medium", "low", "warning", "note", "error"),
           "tool_name": _string("Name of the scanning tool")}),
    _read("code_security", "get_code_scanning_alert", "Get details of a code scanning alert.",
          {**REPO_ARGS, "alertNumber": ALERT_NUMBER}),
    _read("secret_protection", "list_secret_scanning_alerts", "List secret scanning alerts in a repository.", REPO_ARGS,
          {"state": _enum("Alert state", "open", "resolved"), "secret_type": _string("Comma-separated secret types"),
           "resolution": _enum("Resolution", "false_positive", "wont_fix", "revoked", "pattern_edited",
                               "pattern_deleted", "used_in_tests")}),
    _read("secret_protection", "get_secret_scanning_alert", "Get details of a secret scanning alert.",
          {**REPO_ARGS, "alertNumber": ALERT_NUMBER}),
    _read("dependabot", "list_dependabot_alerts", "List Dependabot alerts in a repository.", REPO_ARGS,
          {"state": _enum("Alert state", "open", "fixed", "dismissed", "auto_dismissed"),
           "severity": _enum("Severity", "low", "medium", "high", "critical")}),
    _read("dependabot", "get_dependabot_alert", "Get details of a Dependabot alert.",
          {**REPO_ARGS, "alertNumber": ALERT_NUMBER}),
    _read("security_advisories", "list_global_security_advisories", "List global security advisories.",
          optional={"ecosystem": _string("Package ecosystem, e.g. npm or pip"), "severity": _string("Severity"),
                    "cveId": _string("CVE ID"), "ghsaId": _string("GHSA ID")}),
    _read("security_advisories", "get_global_security_advisory", "Get a global security advisory.",
          {"ghsaId": _string("GitHub Security Advisory ID (GHSA-xxxx-xxxx-xxxx)")}),
    _read("security_advisories", "list_repository_security_advisories", "List the security advisories of a repository.",
          REPO_ARGS, {"state": _enum("Advisory state", "triage", "draft", "published", "closed")}),
    _read("security_advisories", "list_org_repository_security_advisories",
          "List the repository security advisories of an organization.", {"org": ORG}),
    # notifications
    _read("notifications", "list_notifications", "List the notifications of the authenticated user.",
          optional={"filter": _enum("Which notifications", "default", "include_read_notifications",
                                    "only_participating"),
                    "since": _string("ISO 8601 timestamp"), "owner": OWNER, "repo": REPO, **PAGINATION}),
    _read("notifications", "get_notification_details", "Get details of a notification thread.",
          {"notificationID": THREAD_ID}),
    _write("notifications", "dismiss_notification", "Mark a notification thread as read or done.",
           {"threadID": THREAD_ID, "state": _enum("New state", "read", "done")}),
    _write("notifications", "mark_all_notifications_read", "Mark all notifications as read.",
           optional={"lastReadAt": _string("ISO 8601 timestamp"), "owner": OWNER, "repo": REPO}),
    _write("notifications", "manage_notification_subscription",
           "Ignore, watch or delete a notification thread subscription.",
           {"notificationID": THREAD_ID, "action": _enum("Action", "ignore", "watch", "delete")}),
    _write("notifications", "manage_repository_notification_subscription",
           "Ignore, watch or delete the notification subscription of a repository.",
           {**REPO_ARGS, "action": _enum("Action", "ignore", "watch", "delete")}),
    # discussions
    _read("discussions", "list_discussions", "List discussions of a repository.", REPO_ARGS,
          {"category": _string("Category ID"), "orderBy": _enum("Order by", "CREATED_AT", "UPDATED_AT"),
           "direction": _enum("Order direction", "ASC", "DESC"), "after": _string("Cursor for pagination")}),
    _read("discussions", "get_discussion", "Get a specific discussion.",
          {**REPO_ARGS, "discussionNumber": DISCUSSION_NUMBER}),
    _read("discussions", "get_discussion_comments", "Get the comments of a discussion.",
          {**REPO_ARGS, "discussionNumber": DISCUSSION_NUMBER}, {"after": _string("Cursor for pagination")}),
    _read("discussions", "list_discussion_categories", "List the discussion categories of a repository.", REPO_ARGS),
    # gists
    _read("gists", "list_gists", "List the gists of a user.",
          optional={"username": _string("Login of the user; defaults to the authenticated user"),
                    "since": _string("ISO 8601 timestamp"), **PAGINATION}),
    _read("gists", "get_gist", "Get a gist by ID.", {"gist_id": GIST_ID}),
    _write("gists", "create_gist", "Create a new gist.", {"filename": _string("Name of the file"),
                                                          "content": _string("Content of the file")},
           {"description": _string("Gist description"), "public": _boolean("Whether the gist is public")}),
    _write("gists", "update_gist", "Update an existing gist.",
           {"gist_id": GIST_ID, "filename": _string("Name of the file"), "content": _string("New content of the file")},
           {"description": _string("New description")}),
    # projects
    _read("projects", "list_projects", "List the Projects of a user or organization.",
          {"owner": _string("User or organization login"), "owner_type": _enum("Owner type", "user", "org")},
          {"query": _string("Filter projects"), "per_page": PAGINATION["perPage"]}),
    _read("projects", "get_project", "Get a Project of a user or organization.",
          {"owner": _string("User or organization login"), "owner_type": _enum("Owner type", "user", "org"),
           "project_number": PROJECT_NUMBER}),
    _read("projects", "list_project_items", "List the items of a Project.",
          {"owner": _string("User or organization login"), "owner_type": _enum("Owner type", "user", "org"),
           "project_number": PROJECT_NUMBER}, {"query": _string("Filter items"), "per_page": PAGINATION["perPage"]}),
    _write("projects", "add_project_item", "Add an issue or pull request to a Project.",
           {"owner": _string("User or organization login"), "owner_type": _enum("Owner type", "user", "org"),
            "project_number": PROJECT_NUMBER, "item_type": _enum("Item type", "issue", "pull_request"),
            "item_id": _integer("ID of the issue or pull request")}),
    _write("projects", "delete_project_item", "Remove an item from a Project.",
           {"owner": _string("User or organization login"), "owner_type": _enum("Owner type", "user", "org"),
            "project_number": PROJECT_NUMBER, "item_id": _integer("ID of the project item")}),
    # labels
    _read("labels", "get_label", "Get a label of a repository.", {**REPO_ARGS, "name": _string("Label name")}),
    _read("labels", "list_label", "List the labels of a repository.", REPO_ARGS),
    _write("labels", "label_write", "Create, update or delete a label of a repository.",
           {**REPO_ARGS, "method": _enum("Operation", "create", "update", "delete"), "name": _string("Label name")},
           {"new_name": _string("New name (update)"), "color": _string("Six-digit hex color"),
            "description": _string("Label description")}),
)

TOOLS_BY_NAME: dict[str, ToolSpec] = {spec.name: spec for spec in TOOLS}
TOOL_NAMES: list[str] = [spec.name for spec in TOOLS]

# The tools the demo's policies are written around: typical reads and writes of a coding agent.
READ_TOOLS: list[str] = [
    "search_repositories", "get_file_contents", "list_issues", "list_pull_requests", "search_users", "search_code",
]
WRITE_TOOLS: list[str] = [
    "create_issue", "push_files", "create_pull_request", "merge_pull_request", "create_repository",
]

# Implemented in demo_upstream.py because they talk to the client while running.
INTERACTIVE_TOOLS: tuple[str, ...] = ("summarize_issue", "delete_repository", "run_workflow")


# --- fake results ---------------------------------------------------------------------------------


def stable_number(*parts: Any, modulo: int = 10**8) -> int:
    """A number derived from `parts` that is the same in every process (unlike `hash()`)."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "big") % modulo


def stable_sha(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "project"


def _repository(owner: str, name: str, description: str) -> dict[str, Any]:
    languages = ("Go", "Python", "TypeScript", "Rust", "Ruby")
    return {
        "id": stable_number("repo", owner, name),
        "name": name,
        "full_name": f"{owner}/{name}",
        "private": False,
        "html_url": f"https://github.com/{owner}/{name}",
        "description": description,
        "language": languages[stable_number(owner, name, modulo=len(languages))],
        "stargazers_count": stable_number("stars", owner, name, modulo=50_000),
        "forks_count": stable_number("forks", owner, name, modulo=5_000),
        "default_branch": "main",
        "updated_at": "2025-06-18T09:30:00Z",
    }


def file_text(owner: str, repo: str, path: str, ref: str = "main") -> str:
    """Plausible contents for any file of any repository (also served as MCP resources)."""
    name = path.rsplit("/", 1)[-1]
    if name.lower() == "readme.md":
        return (f"# {repo}\n\nThis is the `{owner}/{repo}` repository.\n\n## Getting started\n\n"
                f"```\ngit clone https://github.com/{owner}/{repo}.git\n```\n")
    if name.endswith(".py"):
        return f'"""{path} of {owner}/{repo} at {ref}."""\n\n\ndef main() -> None:\n    print("Hello from {repo}")\n'
    if name.endswith((".yml", ".yaml")):
        return ("name: ci\non: [push, pull_request]\njobs:\n  test:\n    runs-on: ubuntu-latest\n    steps:\n"
                "      - uses: actions/checkout@v4\n")
    return f"Contents of {path} in {owner}/{repo} at {ref}.\n"


def _search_repositories(args: dict[str, Any]) -> dict[str, Any]:
    query = args["query"]
    slug = _slug(query)
    about = f"Matches the query '{query}'"
    items = [_repository("octocat", slug, about), _repository("github", f"{slug}-action", about),
             _repository("octo-org", f"awesome-{slug}", about)]
    return {"query": query, "total_count": len(items), "incomplete_results": False, "items": items}


def _get_file_contents(args: dict[str, Any]) -> dict[str, Any]:
    owner, repo, path = args["owner"], args["repo"], args["path"].strip("/")
    ref = args.get("sha") or args.get("ref") or "main"
    if not path or args["path"].endswith("/"):
        entries = ["README.md", "LICENSE", "src/", ".github/"]
        return {"type": "dir", "path": path, "ref": ref,
                "entries": [{"name": e.rstrip("/"), "type": "dir" if e.endswith("/") else "file",
                             "path": f"{path}/{e}".strip("/").rstrip("/")} for e in entries]}
    text = file_text(owner, repo, path, ref)
    return {"type": "file", "name": path.rsplit("/", 1)[-1], "path": path, "ref": ref,
            "sha": stable_sha(owner, repo, path, ref), "size": len(text.encode()), "encoding": "utf-8", "content": text,
            "html_url": f"https://github.com/{owner}/{repo}/blob/{ref}/{path}"}


_ISSUE_TITLES = ("Crash when config file is missing", "Add dark mode", "Docs: typo in README")


def _list_issues(args: dict[str, Any]) -> dict[str, Any]:
    owner, repo = args["owner"], args["repo"]
    state = args.get("state", "OPEN")
    issues = [{"number": number, "title": title, "state": state, "author": "octocat",
               "labels": args.get("labels", []), "html_url": f"https://github.com/{owner}/{repo}/issues/{number}"}
              for number, title in enumerate(_ISSUE_TITLES, start=1)]
    return {"repository": f"{owner}/{repo}", "totalCount": len(issues), "issues": issues}


def _list_pull_requests(args: dict[str, Any]) -> dict[str, Any]:
    owner, repo = args["owner"], args["repo"]
    state = args.get("state", "open")
    pulls = [{"number": 10 + number, "title": f"Fix: {title.lower()}", "state": state, "user": {"login": "hubot"},
              "head": {"ref": f"fix-{number}"}, "base": {"ref": args.get("base", "main")},
              "html_url": f"https://github.com/{owner}/{repo}/pull/{10 + number}"}
             for number, title in enumerate(_ISSUE_TITLES, start=1)]
    return {"repository": f"{owner}/{repo}", "pull_requests": pulls}


def _search_users(args: dict[str, Any]) -> dict[str, Any]:
    query = args["query"]
    logins = [_slug(query), f"{_slug(query)}-dev", f"{_slug(query)}bot"]
    items = [{"login": login, "id": stable_number("user", login), "type": "User",
              "html_url": f"https://github.com/{login}"} for login in logins]
    return {"query": query, "total_count": len(items), "items": items}


def _search_code(args: dict[str, Any]) -> dict[str, Any]:
    query = args["query"]
    paths = ("src/main.py", "lib/util.go", "README.md")
    items = [{"name": path.rsplit("/", 1)[-1], "path": path, "sha": stable_sha(query, path),
              "repository": {"full_name": f"octocat/{_slug(query)}"},
              "html_url": f"https://github.com/octocat/{_slug(query)}/blob/main/{path}",
              "text_matches": [{"fragment": f"... {query} ..."}]} for path in paths]
    return {"query": query, "total_count": len(items), "items": items}


def _get_me(_: dict[str, Any]) -> dict[str, Any]:
    return {"login": "octocat", "id": 583231, "name": "The Octocat", "company": "@github",
            "html_url": "https://github.com/octocat", "public_repos": 8, "followers": 17000, "type": "User"}


def _create_issue(args: dict[str, Any]) -> dict[str, Any]:
    owner, repo = args["owner"], args["repo"]
    number = 100 + stable_number(owner, repo, args["title"], modulo=900)
    return {"number": number, "title": args["title"], "body": args.get("body", ""), "state": "open",
            "labels": args.get("labels", []), "assignees": args.get("assignees", []),
            "html_url": f"https://github.com/{owner}/{repo}/issues/{number}"}


def _push_files(args: dict[str, Any]) -> dict[str, Any]:
    sha = stable_sha(args["owner"], args["repo"], args["branch"], args["message"], args["files"])
    return {"ref": f"refs/heads/{args['branch']}", "commit": {"sha": sha, "message": args["message"]},
            "files": [f.get("path") for f in args["files"]]}


def _create_pull_request(args: dict[str, Any]) -> dict[str, Any]:
    owner, repo = args["owner"], args["repo"]
    number = 100 + stable_number(owner, repo, args["title"], args["head"], modulo=900)
    return {"number": number, "title": args["title"], "state": "open", "draft": args.get("draft", False),
            "head": {"ref": args["head"]}, "base": {"ref": args["base"]},
            "html_url": f"https://github.com/{owner}/{repo}/pull/{number}"}


def _merge_pull_request(args: dict[str, Any]) -> dict[str, Any]:
    return {"merged": True, "sha": stable_sha(args["owner"], args["repo"], args["pullNumber"]),
            "merge_method": args.get("merge_method", "merge"), "message": "Pull Request successfully merged"}


def _create_repository(args: dict[str, Any]) -> dict[str, Any]:
    owner = args.get("organization") or "octocat"
    repository = _repository(owner, args["name"], args.get("description", ""))
    return {**repository, "private": args.get("private", False), "created": True}


_RESULTS = {
    "search_repositories": _search_repositories,
    "get_file_contents": _get_file_contents,
    "list_issues": _list_issues,
    "list_pull_requests": _list_pull_requests,
    "search_users": _search_users,
    "search_code": _search_code,
    "get_me": _get_me,
    "create_issue": _create_issue,
    "push_files": _push_files,
    "create_pull_request": _create_pull_request,
    "merge_pull_request": _merge_pull_request,
    "create_repository": _create_repository,
}


def fake_result(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The demo answer to a call of catalogue tool `name` (KeyError for an unknown name)."""
    spec = TOOLS_BY_NAME[name]
    if name in _RESULTS:
        return _RESULTS[name](arguments)
    # Everything else gets a generic answer that still echoes the call.
    result: dict[str, Any] = {"tool": name, "arguments": arguments}
    if spec.read_only and name.startswith(("list_", "search_")):
        noun = name.split("_", 1)[1]
        result["items"] = [{"id": stable_number(name, arguments, index), "name": f"{noun}-{index}"} for index in (1, 2)]
        result["total_count"] = 2
    elif spec.read_only:
        result["id"] = stable_number(name, arguments)
    else:
        result.update(status="ok", id=stable_number(name, arguments))
    return result
