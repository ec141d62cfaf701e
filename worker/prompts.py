"""Prompt building: datasets + a condition -> the exact texts the model reads.

One rule for every template: a prompt ends where the answer begins. With `delim` the target
delimiter and `suffix` the query suffix (default: `delim` without its trailing spaces), a
prompt is `[instruction + sep] + [header] + demo_1 + sep + ... + demo_k + sep + query.input +
suffix`, each demo `input + delim + output`, and the continuation that is scored or trained is
`delim[len(suffix):] + output`, so prompt + continuation is exactly the demos, then
`query.input + delim + output`.

- Janapati & Ji (`plain`, delimiter "\\n"): demos `input\\noutput\\n\\n`, then `input\\n`; the
  state is read at that final "\\n", the answer position.
- Doimo et al. (`mcq`, delimiter " "): a subject header, demos `...Answer: X\\n\\n`, the query
  ending at `Answer:` (the space belongs to the answer, as in lm-evaluation-harness).

Demonstration selection lives in `demos`; docs/data.md shows each format with `repr()`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from reprlab.schemas.specs import ICLCondition, PromptSpec
from reprlab.worker.data import Dataset, Example
from reprlab.worker.demos import fixed_demos, noisy_labels, select_demos
from reprlab.worker.errors import SpecError

__all__ = [
    "FORMAT_VERSION",
    "MCQ_HEADER",
    "Prompt",
    "PromptFormat",
    "build_prompts",
    "fixed_demos",
    "prompt_format",
    "training_texts",
]

MCQ_HEADER = "The following are multiple choice questions (with answers) about {subject}.\n\n"
# Part of every content key built from prompts: bump it when rendering changes.
FORMAT_VERSION = "2"


@dataclass(frozen=True)
class Prompt:
    """One prompt: its text, the query it asks, the demonstrations it shows.

    `spans` are the query item's named spans as character ranges [start, end) of `text`;
    `noisy` the positions in `demos` whose output was replaced by a wrong label word.
    """

    text: str
    item: int
    demos: tuple[int, ...]
    spans: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    noisy: tuple[int, ...] = ()


@dataclass(frozen=True)
class PromptFormat:
    """How items become text: the resolved template, delimiter, suffix and separators."""

    template: str
    delimiter: str
    suffix: str
    separator: str
    instruction: str | None

    @property
    def continuation_prefix(self) -> str:
        """The part of the delimiter after the prompt's end (it starts every continuation)."""
        return self.delimiter[len(self.suffix) :]

    def continuation(self, output: str) -> str:
        """What follows a prompt when the answer is `output`."""
        return self.continuation_prefix + output

    def key(self) -> dict[str, Any]:
        """Everything that determines the rendered texts, for content keys."""
        return {
            "v": FORMAT_VERSION,
            "template": self.template,
            "delimiter": self.delimiter,
            "suffix": self.suffix,
            "separator": self.separator,
            "instruction": self.instruction,
        }

    def render(self, query: Example, demos: Sequence[Example]) -> str:
        """The prompt of `query` after `demos`, ending at the answer position."""
        sep = self.separator
        parts = [d.input + self.delimiter + d.output for d in demos]
        body = sep.join([*parts, query.input + self.suffix])
        if self.template == "mcq":
            subject = str(query.labels.get("subject", "general knowledge")).replace("_", " ")
            body = MCQ_HEADER.format(subject=subject) + body
        if self.instruction:
            body = self.instruction + sep + body
        return body


def prompt_format(dataset: Dataset, spec: PromptSpec) -> PromptFormat:
    """The format of a job's prompts: the spec's choices, else the dataset's defaults.

    Raises:
        SpecError: the query suffix is not the start of the target delimiter.
    """
    delim = spec.target_delimiter if spec.target_delimiter is not None else dataset.target_delimiter
    suffix = spec.query_suffix if spec.query_suffix is not None else delim.rstrip(" ")
    if not delim.startswith(suffix):
        raise SpecError(
            f"prompt.query_suffix {suffix!r} is not the start of the target delimiter {delim!r} "
            f"(dataset '{dataset.name}')",
            hint="leave query_suffix out (it defaults to the delimiter without trailing "
            "spaces), or set prompt.target_delimiter to begin with it",
        )
    template = dataset.template if spec.template == "auto" else spec.template
    return PromptFormat(template, delim, suffix, spec.demo_separator, spec.instruction)


def build_prompts(
    dataset: Dataset,
    condition: ICLCondition,
    spec: PromptSpec,
    *,
    pool: Dataset | None = None,
    given: Sequence[Sequence[int]] | None = None,
) -> list[Prompt]:
    """One prompt per query of `dataset.eval`, with `condition.k` demonstrations each.

    Demonstrations follow `condition.selection` (`demos.select_demos`), drawn from
    `pool.train` (another task's data: `condition.demo_dataset`) or else `dataset.train`;
    `given` holds the draws of selection 'given'. With `condition.label_noise`, some demos
    show a wrong label word (`demos.noisy_labels`). The query's spans are carried over,
    shifted by the text before the query input.

    Raises:
        SpecError: k exceeds the demonstration pool (or a group's share of it), a query lacks
            the grouping label, the format is inconsistent, or the condition is an unexpanded
            k-sweep.
    """
    k = condition.k_value
    # Selection and label noise see the queries with the pool (and its label words) as train.
    view = dataset if pool is None else replace(dataset, train=pool.train, options=pool.options)
    if condition.seed_value < 0:  # numpy seeds must be non-negative
        raise SpecError(
            f"condition '{condition.name}' has seed={condition.seed}",
            hint="use a seed >= 0",
        )
    if k > len(view.train):
        raise SpecError(
            f"condition '{condition.name}' asks for k={k} demonstrations per query but the "
            f"training pool has {len(view.train)} items",
            hint=f"raise dataset.n_train to at least {k}, or lower k",
        )
    fmt = prompt_format(dataset, spec)
    chosen = select_demos(view, condition, k, given)
    noise = condition.label_noise_value
    prompts = []
    for i, query in enumerate(dataset.eval):
        wrong = noisy_labels(view, chosen[i], noise, condition.seed_value, i) if noise else {}
        shown = [view.train[j] for j in chosen[i]]
        shown = [replace(ex, output=wrong[p]) if p in wrong else ex for p, ex in enumerate(shown)]
        text = fmt.render(query, shown)
        offset = len(text) - len(fmt.suffix) - len(query.input)
        spans = {name: (start + offset, end + offset) for name, (start, end) in query.spans.items()}
        prompts.append(Prompt(text, i, chosen[i], spans, tuple(sorted(wrong))))
    return prompts


def training_texts(
    dataset: Dataset, indices: Sequence[int], spec: PromptSpec
) -> list[tuple[str, str]]:
    """(prompt, continuation) of each training item: its zero-shot prompt, then the rest of
    the delimiter and the output, so a tuned model is trained on exactly the format it is
    analysed in."""
    fmt = prompt_format(dataset, spec)
    return [
        (fmt.render(dataset.train[j], []), fmt.continuation(dataset.train[j].output))
        for j in indices
    ]
