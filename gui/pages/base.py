"""What every wizard page shares: load from the config, store into it, and refuse to go on
while RunConfig.validate() reports a problem in this page's sections."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QVBoxLayout, QWizardPage

from cpt_studio.core.config import RunConfig


class ConfigPage(QWizardPage):
    sections: tuple[str, ...] = ()
    """The prefixes of RunConfig.validate()'s problems that belong to this page."""

    def __init__(self, title: str, subtitle: str = ""):
        super().__init__()
        self.setTitle(title)
        self.setSubTitle(subtitle)
        self.layout_ = QVBoxLayout(self)
        self.problems = QLabel(wordWrap=True, objectName="problems")
        self.problems.setStyleSheet("color:#b00020;")
        self.problems.hide()

    def finish_layout(self) -> None:
        self.layout_.addStretch(1)
        self.layout_.addWidget(self.problems)

    @property
    def config(self) -> RunConfig:
        return self.wizard().config

    def initializePage(self) -> None:
        self.load(self.config)

    def load(self, config: RunConfig) -> None:
        """Show the config's values in the widgets."""

    def store(self, config: RunConfig) -> None:
        """Write the widgets' values into the config."""

    def page_problems(self) -> list[str]:
        self.store(self.config)
        return [p for p in self.config.validate() if p.startswith(self.sections)]

    def validatePage(self) -> bool:
        problems = self.page_problems()
        self.show_problems(problems)
        return not problems

    def show_problems(self, problems: list[str]) -> None:
        self.problems.setText("\n".join(f"• {p}" for p in problems))
        self.problems.setVisible(bool(problems))
