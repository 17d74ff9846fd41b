"""Page 1, the base model: a cached model, a folder, or a GGUF file; its size and the memory
full and LoRA CPT need at the chosen batch, sequence length, precision and gradient
checkpointing (set on later pages: recomputed when the page is shown again after a change).
On a machine with several GPUs, how many of them the run trains on (system.processes: Start
then launches one process per GPU through accelerate)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
)

from cpt_studio.core.config import RunConfig
from cpt_studio.core.estimate import format_bytes
from cpt_studio.core.hf_imports import transformers_names
from cpt_studio.core.models import check_model, model_info, scan_cached_models
from cpt_studio.core.preflight import model_choice_problems
from cpt_studio.core.recipe import (
    cuda_devices,
    memory_estimate,
    meta_model,
    parameter_counts,
    resolve_hardware,
)
from cpt_studio.core.run_folder import RunPaths

from ..jobs import Job
from ..recent import remember_folder, start_folder
from ..setting_help import explain
from .base import ConfigPage
from .pending import wait_while


def describe_model(spec: str, config: RunConfig) -> str:
    """Parameter count, architecture, and the memory of full and LoRA CPT at the config's batch,
    sequence length and LoRA rank, each with the kernels the run would choose on this machine for
    this model (recipe.resolve_hardware: precision, attention, and gradient checkpointing by that
    method's own memory estimate) and the plan's estimate (recipe.memory_estimate)."""
    (AutoConfig,) = transformers_names("AutoConfig")

    from cpt_studio.core.models import resolve_model

    model = config.model
    check_model(spec, allow_pickle=model.allow_pickle)  # a model that cannot be trained: its one sentence
    info = model_info(spec)
    model_config = AutoConfig.from_pretrained(resolve_model(spec, trust_remote_code=model.trust_remote_code),
                                              trust_remote_code=model.trust_remote_code)
    meta = meta_model(model_config, config)
    lines = [f"{info.architecture}, {info.parameters or 0:,} parameters, vocabulary {info.vocab_size:,}, "
             f"{'tied' if info.tied_embeddings else 'untied'} embeddings"]
    if meta is None:  # an architecture this transformers cannot build: loading it will say why
        return "\n".join(lines)
    batch = config.batch
    for kind in ("full", "lora"):
        planned = RunConfig.from_dict(config.to_dict())
        planned.method.kind = kind
        hardware = resolve_hardware(planned, model_config, meta)
        memory = memory_estimate(planned, model_config, hardware, *parameter_counts(meta, planned))
        where = "GPU memory" if hardware.device == "cuda" else "memory (CPU)"
        method = "full" if kind == "full" else f"LoRA r={planned.method.lora_rank}"
        lines.append(f"{method} CPT at {batch.micro_batch} x {batch.seq_len} tokens, {hardware.precision}, "
                     f"checkpointing {'on' if hardware.gradient_checkpointing else 'off'}: "
                     f"about {format_bytes(memory.total)} of {where}")
    return "\n".join(lines)


class ModelPage(ConfigPage):
    sections = ("model:",)

    def __init__(self):
        super().__init__("Base model", "A model in your Hugging Face cache, a model folder, or a GGUF file.")
        self.cached = QListWidget(objectName="cached_models")
        # a click or Enter chooses (not currentItemChanged: a list shown takes its first item as
        # current, which put the first cached model over a loaded setup's model)
        self.cached.itemClicked.connect(self._on_cached_chosen)
        self.cached.itemActivated.connect(self._on_cached_chosen)
        self.chained = QLabel(wordWrap=True, objectName="chained_model", visible=False)
        self.path = QLineEdit(objectName="model_path", placeholderText="folder, cached hub id, or .gguf file")
        self.path.editingFinished.connect(self._on_model_changed)
        folder = QPushButton("Folder…", clicked=self._on_browse_folder)
        gguf = QPushButton("GGUF file…", clicked=self._on_browse_gguf)
        self.trust = QCheckBox("Trust the model's own code (only for repositories you trust)")
        self.allow_pickle = QCheckBox("Allow pickle weights (.bin; they can run code: only models you trust)",
                                      objectName="allow_pickle")
        explain(self.cached, "model.name_or_path")
        explain(self.path, "model.name_or_path")
        explain(self.trust, "model.trust_remote_code")
        explain(self.allow_pickle, "model.allow_pickle")
        self.info = QLabel("Choose a model to see its size and memory needs.", wordWrap=True, objectName="model_info")
        self.gpu_count = cuda_devices()
        self.gpus = QSpinBox(objectName="gpus", minimum=1, maximum=max(self.gpu_count, 1))
        explain(self.gpus, "system.processes")
        gpus_row = QHBoxLayout()
        gpus_row.addWidget(QLabel(f"GPUs to train on ({self.gpu_count} on this machine; one process "
                                  "each, started through accelerate):"))
        gpus_row.addWidget(self.gpus)
        gpus_row.addStretch(1)
        row = QHBoxLayout()
        self.choosers = (self.cached, self.path, folder, gguf)
        for widget in (self.path, folder, gguf):
            row.addWidget(widget)
        self.layout_.addWidget(self.chained)
        self.layout_.addWidget(QLabel("Models in the local cache:"))
        self.layout_.addWidget(self.cached)
        self.layout_.addLayout(row)
        self.layout_.addWidget(self.trust)
        self.layout_.addWidget(self.allow_pickle)
        if self.gpu_count > 1:  # else the row is not offered: one device, one process
            self.layout_.addLayout(gpus_row)
        else:
            self.gpus.hide()
        self.layout_.addWidget(self.info)
        self.finish_layout()
        self._describing = False
        self._described: tuple | None = None
        """What the model's description was last asked for (_describing_what)."""
        self._scan = Job(scan_cached_models)
        self._scan.finished.connect(self._on_scanned)
        self._scan.start()

    def load(self, config) -> None:
        """A chained run (a second stage, an SFT run) starts from its parent's checkpoint: that
        folder is shown, and no other model can be chosen (core.chain)."""
        chained = bool(config.parent_run)
        start = RunPaths(Path(config.parent_run)).checkpoint(config.parent_step) if chained else None
        self.path.setText(str(start) if chained else config.model.name_or_path)
        self.chained.setText(f"This run starts from step {config.parent_step} of {config.parent_run}: "
                             "that checkpoint's weights exactly (its folder below); its base model "
                             "is not chosen here." if chained else "")
        self.chained.setVisible(chained)
        for widget in self.choosers:
            widget.setEnabled(not chained)
        self.trust.setChecked(config.model.trust_remote_code)
        self.allow_pickle.setChecked(config.model.allow_pickle)
        self.gpus.setValue(min(config.system.processes, self.gpus.maximum()))

    def reload(self, config) -> None:
        """As ConfigPage.reload; a setup loaded while this page is shown is described at once
        (else showEvent describes it)."""
        super().reload(config)
        if self.isVisible() and self.wizard() is not None and self._described != self._describing_what():
            self._on_model_changed()

    def showEvent(self, event) -> None:
        """Each time the page is shown, the memory follows the batch, sequence length and
        precision set on later pages since (described again only when one of them changed)."""
        super().showEvent(event)
        if self.wizard() is not None and self._described != self._describing_what():
            self._on_model_changed()

    def store(self, config) -> None:
        config.model.name_or_path = self.path.text().strip()
        config.model.trust_remote_code = self.trust.isChecked()
        config.model.allow_pickle = self.allow_pickle.isChecked()
        if self.gpu_count > 1:  # a setup planned elsewhere for more processes keeps its number
            config.system.processes = self.gpus.value()

    def validatePage(self) -> bool:
        """The model must be one that can be trained (cpt_studio.core.preflight's checks of the model)."""
        wait_while(lambda: self._describing)  # both import transformers
        problems = self.page_problems() or model_choice_problems(self.config)
        self.show_problems(problems)
        return not problems

    def _on_scanned(self, models) -> None:
        for info in models:  # a cached model by its hub id, an imported one by its folder
            item = QListWidgetItem(f"{info.name} (imported)" if info.source == "imported" else info.name)
            item.setData(Qt.ItemDataRole.UserRole, info.path if info.source == "imported" else info.name)
            item.setToolTip(info.path)
            self.cached.addItem(item)
        if not models:
            self.cached.addItem("(no causal language models in the cache or the data folder's models/)")
            self.cached.setEnabled(False)

    def _on_cached_chosen(self, item) -> None:
        if not self.path.isEnabled():
            return
        chosen = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
        if chosen:
            self.path.setText(chosen)
            self._on_model_changed()

    def _on_browse_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder", start_folder("model"))
        remember_folder("model", folder)
        if folder:
            self.path.setText(folder)
            self._on_model_changed()

    def _on_browse_gguf(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "GGUF file", start_folder("model"), "GGUF (*.gguf)")
        remember_folder("model", path)
        if path:
            self.path.setText(path)
            self._on_model_changed()

    def _on_model_changed(self) -> None:
        spec = self.path.text().strip()
        if not spec or not hasattr(self.wizard(), "config"):  # editing ends as the wizard closes
            return
        self.info.setText("Reading the model…")
        self._described = self._describing_what()
        self._describe = Job(describe_model, *self._described)
        self._describe.finished.connect(self._on_described)
        self._describe.failed.connect(lambda message: self._on_described(f"⚠ {message}"))
        self._describing = True
        self._describe.start()

    def _describing_what(self) -> tuple:
        """describe_model's arguments: the model typed, and the config with this page's settings
        (compared as a dict: what later pages set since, e.g. the batch or the precision)."""
        config = RunConfig.from_dict(self.config.to_dict())
        self.store(config)
        config.model.name_or_path = self.path.text().strip()
        return config.model.name_or_path, config

    def _on_described(self, text: str) -> None:
        self.info.setText(text)
        self._describing = False
