# lit configuration for moe's FileCheck tests.
import os
import shutil

import lit.formats
from lit.llvm import llvm_config

config.name = "MOE"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.excludes = ["CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py", "unit", "runtime", "golden", "Inputs"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.moe_obj_root, "test")

llvm_config.use_default_substitutions()
config.substitutions.append(("%models", os.path.join(config.moe_src_root, "models")))
config.substitutions.append(("%golden", os.path.join(config.moe_src_root, "test", "golden")))
config.substitutions.append(("%bench", os.path.join(config.moe_src_root, "bench")))
config.substitutions.append(("%moe_bin", config.moe_tools_dir))
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)
llvm_config.add_tool_substitutions(["moe-opt", "moe-run"], [config.moe_tools_dir])

# The launcher of a job in shards over several hosts (OpenMPI's mpirun).
if shutil.which("mpirun"):
    config.available_features.add("mpirun")
