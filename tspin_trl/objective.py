"""The objective's policy: what each self-play iteration needs and uses (roles, alpha, beta, the learning-rate
multiplier, reference log-probs, prompt selection), decided once.

Every other module asks this object instead of re-deriving the answer from the config: the trainer for the loss and
the learning rate, the self-play callback for which responses and log-probs to prepare.
"""

from dataclasses import dataclass


ROLES = ("real", "synthetic", "proto")


@dataclass(frozen=True)
class ObjectivePolicy:
    """
    Which responses, weights, learning-rate multiplier and reference log-probs an iteration of the chosen objective
    uses.

    Args:
        objective (`str`):
            `"tspin"`, `"tspin_ref"` or `"spin"`.
        beta (`float`):
            Weight of the historical term from iteration 1 on (and in iteration 0 when the dataset brings its own
            synthetic responses).
        beta_first_iteration (`float`):
            Weight of the historical term in iteration 0 when its synthetic responses come from the initial policy
            (then `y'` and `y0` share a policy).
        reuse_proto_as_first_synthetic (`bool`):
            Whether iteration 0's synthetic responses are the proto-synthetic ones.
        own_synthetic (`bool`):
            Whether the training dataset brings its own `synthetic` responses for iteration 0.
        alpha (`float`):
            The reward scale of every iteration (when there is no `alpha_schedule`).
        alpha_schedule (`tuple[float, ...]`, *optional*):
            The reward scale of each iteration.
        beta_schedule (`tuple[float, ...]`, *optional*):
            The historical term's weight in each iteration: replaces `beta` and `beta_first_iteration` (SPIN: always
            0 all the same).
        learning_rate_schedule (`tuple[float, ...]`, *optional*):
            A multiplier of the learning rate per iteration.
        prompt_selection_threshold (`float`, *optional*):
            Prompts whose last pair's scaled current advantage is above this are skipped in the next iteration.

    Example:

    ```python
    >>> from tspin_trl.objective import ObjectivePolicy

    >>> policy = ObjectivePolicy("tspin", beta=0.1, beta_first_iteration=0.0, reuse_proto_as_first_synthetic=True)
    >>> policy.beta_for(0), policy.beta_for(1), policy.roles_for(0), policy.roles_for(1)
    (0.0, 0.1, ('real', 'synthetic'), ('real', 'synthetic', 'proto'))
    >>> ObjectivePolicy("spin", 0.1, 0.0, True).reference_roles_for(1)
    ('real', 'synthetic')
    >>> annealed = ObjectivePolicy(
    ...     "spin", 0.1, 0.0, True, alpha_schedule=(0.1, 0.1, 5.0), learning_rate_schedule=(1, 1, 0.2)
    ... )
    >>> [(annealed.alpha_for(t), annealed.learning_rate_scale(t)) for t in range(3)]
    [(0.1, 1), (0.1, 1), (5.0, 0.2)]
    ```
    """

    objective: str
    beta: float
    beta_first_iteration: float
    reuse_proto_as_first_synthetic: bool
    own_synthetic: bool = False
    alpha: float = 1.0
    alpha_schedule: tuple[float, ...] | None = None
    beta_schedule: tuple[float, ...] | None = None
    learning_rate_schedule: tuple[float, ...] | None = None
    prompt_selection_threshold: float | None = None

    @classmethod
    def from_config(cls, args, own_synthetic: bool) -> "ObjectivePolicy":
        def schedule(values):
            return None if values is None else tuple(values)

        return cls(
            objective=args.objective,
            beta=args.beta,
            beta_first_iteration=args.beta_first_iteration,
            reuse_proto_as_first_synthetic=args.reuse_proto_as_first_synthetic,
            own_synthetic=own_synthetic,
            alpha=args.alpha,
            alpha_schedule=schedule(args.alpha_schedule),
            beta_schedule=schedule(args.beta_schedule),
            learning_rate_schedule=schedule(args.learning_rate_schedule),
            prompt_selection_threshold=args.prompt_selection_threshold,
        )

    @property
    def uses_reference(self) -> bool:
        """Whether rewards are measured against the policy at the start of each iteration (SPIN, T-SPIN_ref)."""
        return self.objective in ("spin", "tspin_ref")

    def alpha_for(self, iteration: int) -> float:
        """The reward scale of `iteration`: `alpha_schedule[iteration]`, else `alpha`."""
        return self.alpha if self.alpha_schedule is None else self.alpha_schedule[iteration]

    def learning_rate_scale(self, iteration: int) -> float:
        """The multiplier of the learning rate in `iteration`: `learning_rate_schedule[iteration]`, else 1."""
        return 1.0 if self.learning_rate_schedule is None else self.learning_rate_schedule[iteration]

    def beta_for(self, iteration: int) -> float:
        """Weight of the historical term in `iteration` (always 0 for SPIN): `beta_schedule[iteration]`, else
        `beta_first_iteration` in iteration 0 when its synthetic responses come from the initial policy, else `beta`."""
        if self.objective == "spin":
            return 0.0
        if self.beta_schedule is not None:
            return self.beta_schedule[iteration]
        if iteration == 0 and not self.own_synthetic:
            return self.beta_first_iteration
        return self.beta

    def selects_prompts(self, iteration: int) -> bool:
        """Whether prompts may be skipped in `iteration`: with prompt selection on, from iteration 1 on (iteration 0
        has no earlier pair to judge a prompt by)."""
        return self.prompt_selection_threshold is not None and iteration > 0

    def roles_for(self, iteration: int) -> tuple[str, ...]:
        """The responses a training example of `iteration` holds: the proto one only when its term is on."""
        return ROLES if self.beta_for(iteration) > 0 else ROLES[:2]

    def reference_roles_for(self, iteration: int) -> tuple[str, ...]:
        """The roles whose reference log-probs `iteration` needs (none for the reference-free T-SPIN)."""
        return self.roles_for(iteration) if self.uses_reference else ()

    def needs_proto(self, iteration: int, own_synthetic: bool | None = None) -> bool:
        """Whether `iteration` needs proto-synthetic responses: for its historical term, or as iteration 0's synthetic
        responses (`own_synthetic` overrides the training dataset's for another dataset)."""
        if self.beta_for(iteration) > 0:
            return True
        return self.synthetic_source(iteration, own_synthetic) == "proto"

    def proto_needed_in_run(self, num_iterations: int, own_synthetic: bool | None = None) -> bool:
        """Whether any iteration of a run of `num_iterations` needs proto-synthetic responses: they must then be
        sampled before training (from the initial policy), even when iteration 0 itself does not use them."""
        return any(self.needs_proto(t, own_synthetic) for t in range(num_iterations))

    def synthetic_source(self, iteration: int, own_synthetic: bool | None = None) -> str:
        """Where `iteration`'s synthetic responses come from: `"dataset"`, `"proto"` or `"policy"` (sampled);
        `own_synthetic` overrides the training dataset's for another dataset."""
        if iteration == 0 and (self.own_synthetic if own_synthetic is None else own_synthetic):
            return "dataset"
        if iteration == 0 and self.reuse_proto_as_first_synthetic:
            return "proto"
        return "policy"
