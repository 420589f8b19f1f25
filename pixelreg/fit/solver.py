"""The batched Levenberg-Marquardt least-squares solver that the classical Gaussian fit and the
joint fits of neighbouring spots share.

Every problem of a batch is solved at once: parameters (..., P), the residuals data - model
(..., R) and the Jacobian of the model (..., R, P), so that the Gauss-Newton step is
(J^T J)^-1 J^T r. A step that lowers a problem's sum of squares is kept and its damping
divided by 3; one that does not is dropped and its damping multiplied by 4 (Marquardt's rule,
the damping scaling the diagonal of J^T J).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Residuals = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
START_DAMPING = 1e-3
DAMPING_RANGE = (1e-7, 1e7)


def levenberg_marquardt(
    residuals: Residuals,
    params: torch.Tensor,
    iterations: int,
    ridge: float = 1e-9,
    free: torch.Tensor | None = None,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
    tolerance: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The parameters (..., P) that minimise each problem's sum of squares of `residuals(params)`
    (which returns data - model and the model's Jacobian), and that sum (...,). `ridge` keeps J^T J invertible where a parameter has no effect; `free`
    (..., P), where given, holds the parameters marked False; `project` maps a trial step's
    parameters into their domain (a brightness kept positive); the loop ends early once no
    parameter of any problem moves by more than `tolerance`."""
    residual, jac = residuals(params)
    cost = (residual**2).sum(-1)
    damping = torch.full_like(cost, START_DAMPING)
    eye = torch.eye(params.shape[-1], dtype=params.dtype, device=params.device)
    for _ in range(iterations):
        jtj = jac.transpose(-1, -2) @ jac
        jtr = (jac.transpose(-1, -2) @ residual[..., None])[..., 0]
        lhs = (
            jtj
            + damping[..., None, None] * torch.diag_embed(torch.diagonal(jtj, dim1=-2, dim2=-1))
            + ridge * eye
        )
        step = torch.linalg.solve(lhs, jtr[..., None])[..., 0]
        if free is not None:
            step = step * free
        trial = params + step if project is None else project(params + step)
        new_residual, new_jac = residuals(trial)
        new_cost = (new_residual**2).sum(-1)
        better = new_cost < cost
        params = torch.where(better[..., None], trial, params)
        residual = torch.where(better[..., None], new_residual, residual)
        jac = torch.where(better[..., None, None], new_jac, jac)
        cost = torch.where(better, new_cost, cost)
        damping = torch.where(better, damping / 3, damping * 4).clamp(*DAMPING_RANGE)
        if tolerance is not None and step.abs().max() < tolerance:
            break
    return params, cost
