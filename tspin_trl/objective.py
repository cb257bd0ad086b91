"""The objective's policy: what each self-play iteration needs (roles, beta, reference log-probs), decided once.

Every other module asks this object instead of re-deriving the answer from the config: the trainer for the loss, the
self-play callback for which responses and log-probs to prepare.
"""

from dataclasses import dataclass


ROLES = ("real", "synthetic", "proto")


@dataclass(frozen=True)
class ObjectivePolicy:
    """
    Which responses, weights and reference log-probs an iteration of the chosen objective uses.

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

    Example:

    ```python
    >>> from tspin_trl.objective import ObjectivePolicy

    >>> policy = ObjectivePolicy("tspin", beta=0.1, beta_first_iteration=0.0, reuse_proto_as_first_synthetic=True)
    >>> policy.beta_for(0), policy.beta_for(1), policy.roles_for(0), policy.roles_for(1)
    (0.0, 0.1, ('real', 'synthetic'), ('real', 'synthetic', 'proto'))
    >>> ObjectivePolicy("spin", 0.1, 0.0, True).reference_roles_for(1)
    ('real', 'synthetic')
    ```
    """

    objective: str
    beta: float
    beta_first_iteration: float
    reuse_proto_as_first_synthetic: bool
    own_synthetic: bool = False

    @classmethod
    def from_config(cls, args, own_synthetic: bool) -> "ObjectivePolicy":
        return cls(
            objective=args.objective,
            beta=args.beta,
            beta_first_iteration=args.beta_first_iteration,
            reuse_proto_as_first_synthetic=args.reuse_proto_as_first_synthetic,
            own_synthetic=own_synthetic,
        )

    @property
    def uses_reference(self) -> bool:
        """Whether rewards are measured against the policy at the start of each iteration (SPIN, T-SPIN_ref)."""
        return self.objective in ("spin", "tspin_ref")

    def beta_for(self, iteration: int) -> float:
        """Weight of the historical term in `iteration` (always 0 for SPIN)."""
        if self.objective == "spin":
            return 0.0
        if iteration == 0 and not self.own_synthetic:
            return self.beta_first_iteration
        return self.beta

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
