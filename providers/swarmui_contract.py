"""What genhub and the GPU image (`Dockerfile.swarmui`) agree on. Both sides read these values;
`tests/docker` checks the Dockerfile and entrypoint against them.
"""

# SwarmUI listens here inside the container; the vast create request maps it (`-p 7801:7801`).
SWARMUI_PORT = 7801

# The entrypoint writes this per-instance secret into SwarmUI's Network.RequiredAuthorization;
# every request genhub sends carries it as the `Authorization` header. The vast.ai API key is never sent.
SWARMUI_TOKEN_ENV = "SWARMUI_AUTH_TOKEN"

# vast.ai runs the image's own ENTRYPOINT/CMD with the `args` runtype (no SSH or Jupyter wrapper).
VAST_RUNTYPE = "args"

# Model files baked into the image, by SwarmUI model name (the name the API lists and accepts).
VIDEO_MODEL = "Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf"
VIDEO_MODEL_ALT = "wan22EnhancedNSFWCameraPrompt_nsfwFASTMOVEV2Q8H.gguf"
LIGHTX2V_LORA = "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise"
# Optional (build argument WITH_LOW_NOISE=1): the low-noise expert and its LoRA.
VIDEO_SWAP_MODEL = "Wan2.2-I2V-A14B-LowNoise-Q4_K_M.gguf"
LIGHTX2V_LORA_LOW = "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise"
TEXT_ENCODER = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
VAE = "Wan/wan_2.1_vae.safetensors"

# What readiness requires SwarmUI to list before genhub sends it work.
REQUIRED_MODELS = (VIDEO_MODEL,)
REQUIRED_LORAS = (LIGHTX2V_LORA,)

# LoRA section ids for `lorasectionconfinement`: 2 = video (high-noise) model, 3 = video swap (low-noise).
LORA_SECTION_VIDEO = "2"
LORA_SECTION_VIDEO_SWAP = "3"

# --- The encrypted, pinned channel (docs/swarmui-image.md "TLS") ---
# SwarmUI itself listens on loopback only, on this port; a TLS terminator (nginx) owns SWARMUI_PORT,
# checks the token, and proxies HTTP and WebSocket to it.
SWARMUI_INTERNAL_PORT = 7800
# genhub makes a key and a self-signed certificate per instance and pins that certificate. They travel
# in the create request's env as base64 DER (no PEM armour): the key in one entry, the certificate in
# numbered parts (_1, _2, …, concatenated in order), since vast allows 256 characters per entry.
TLS_KEY_ENV = "GENHUB_TLS_KEY"
TLS_CERT_ENV_PREFIX = "GENHUB_TLS_CERT_"
TLS_ENV_CHUNK = 200
# The name in the certificate (no IP is known when it is made). genhub does not check names — the pin
# identifies the instance — but the entrypoint's self-check connects with it.
TLS_SERVER_NAME = "genhub-gpu-instance"
