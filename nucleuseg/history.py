"""What a training run did, epoch by epoch: :class:`EpochRecord` and :class:`History`.

Its own module so that the training loop (:mod:`nucleuseg.training`, which fills a history) and the
model files (:mod:`nucleuseg.checkpoint`, which store and check one) both import it without
importing each other.

Examples
--------
>>> history = History([EpochRecord(1, loss=0.52, score=0.31, learning_rate=1e-3, seconds=9.5)])
>>> history.loss, history.score
([0.52], [0.31])
>>> History.from_dict(history.to_dict()) == history
True
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EpochRecord:
    """What one epoch did."""

    epoch: int
    loss: float
    score: float | None
    learning_rate: float
    seconds: float


@dataclass
class History:
    """Loss and validation score per epoch, and where the best weights came from."""

    epochs: list[EpochRecord] = field(default_factory=list)
    best_epoch: int | None = None
    best_score: float | None = None
    stopped: str = ""
    train_seconds: float = 0.0

    @property
    def loss(self) -> list[float]:
        """Mean training loss per epoch."""
        return [e.loss for e in self.epochs]

    @property
    def score(self) -> list[float | None]:
        """Validation DSB score per epoch (``None`` without validation)."""
        return [e.score for e in self.epochs]

    def to_dict(self) -> dict:
        """JSON-able form (stored in checkpoints)."""
        return {
            "epochs": [vars(e) for e in self.epochs],
            "best_epoch": self.best_epoch,
            "best_score": self.best_score,
            "stopped": self.stopped,
            "train_seconds": self.train_seconds,
        }

    @classmethod
    def from_dict(cls, data: dict) -> History:
        """Inverse of :meth:`to_dict`."""
        return cls(
            epochs=[EpochRecord(**e) for e in data.get("epochs", [])],
            best_epoch=data.get("best_epoch"),
            best_score=data.get("best_score"),
            stopped=data.get("stopped", ""),
            train_seconds=float(data.get("train_seconds", 0.0)),
        )

    def __str__(self) -> str:
        lines = ["epoch   loss    score   lr        s"]
        for e in self.epochs:
            score = "   -  " if e.score is None else f"{e.score:.4f}"
            lines.append(
                f"{e.epoch:5d}  {e.loss:.4f}  {score}  {e.learning_rate:.2e}  {e.seconds:5.1f}"
            )
        if self.best_epoch is not None:
            lines.append(
                f"best epoch {self.best_epoch} (score {self.best_score:.4f}); {self.stopped}"
            )
        return "\n".join(lines)
