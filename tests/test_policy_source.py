"""A policy's source for the console's decision view (engine/policy_source.py): the text its file holds
under exactly its @id, cut correctly around strings and comments; Cedar's rendering, marked, otherwise."""

from __future__ import annotations

from pathlib import Path

from engine import Engine
from engine.policy_source import policy_source, statements

TRICKY = '''// a comment; with a semicolon and @id("decoy.in-comment")
@id("tricky.semicolon-in-string")
@mode("dryrun")
forbid (principal, action == Ops::Action::"echo.ping", resource)
when { context has args && context.args has message && context.args.message == "a; @id(\\"decoy\\")" };

// another comment; @id("decoy.in-second-comment")
@id("tricky.after-block")
permit (principal in Ops::Role::"ops_admin", action == Ops::Action::"echo.comment", resource);
'''


def test_statements_end_at_top_level_semicolons_only() -> None:
    parts = statements(TRICKY)
    assert len(parts) == 2
    assert parts[0].rstrip().endswith('"a; @id(\\"decoy\\")" };')


def test_each_policy_is_cut_from_its_own_file(bundle_dir: Path) -> None:
    (bundle_dir / "tricky.cedar").write_text(TRICKY)
    bundle = Engine.from_dir(bundle_dir).bundle
    first = policy_source(bundle, "tricky.semicolon-in-string")
    assert first is not None and first.written and first.file == "tricky.cedar" and first.mode == "dryrun"
    assert first.text.startswith('@id("tricky.semicolon-in-string")')  # the comment before it is the file's
    assert first.text.endswith('"a; @id(\\"decoy\\")" };')
    second = policy_source(bundle, "tricky.after-block")
    assert second is not None and second.text.startswith('@id("tricky.after-block")')
    assert second.text.endswith('action == Ops::Action::"echo.comment", resource);')
    assert policy_source(bundle, "decoy") is None and policy_source(bundle, "decoy.in-comment") is None


def test_a_policy_without_text_of_its_own_is_rendered_and_says_so(bundle_dir: Path) -> None:
    bundle = Engine.from_dir(bundle_dir).bundle
    egress = next(pid for pid in bundle.by_id if pid.startswith("egress:"))
    source = policy_source(bundle, egress)
    assert source is not None and not source.written  # compiled from provider-allowlist.yaml
    assert source.text.startswith(f'@id("{egress}")') and "Ops::Action::\"egress\"" in source.text
