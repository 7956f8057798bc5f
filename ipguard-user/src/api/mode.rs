//! `GET /v1/mode` and `PUT /v1/mode`: the global mode, switched at run time without a
//! restart (one table rewrite). It holds until the daemon restarts or a reload finds the
//! config file's `mode` changed.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};

use super::{caller, types::ModeRequest, types::ModeView, AppError, AppState, Json};
use crate::{
    controller::Controller,
    dataplane::Backend,
    model::{Mode, Now},
};

fn view<B: Backend>(ctl: &Controller<B>) -> ModeView {
    ModeView {
        mode: ctl.mode().as_str().into(),
        config_mode: ctl.config_mode().as_str().into(),
    }
}

pub(super) async fn get_mode<B: Backend>(
    State(st): State<AppState<B>>,
) -> Result<axum::Json<ModeView>, AppError> {
    Ok(axum::Json(view(&*st.lock().await?)))
}

pub(super) async fn put_mode<B: Backend>(
    State(st): State<AppState<B>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(req): Json<ModeRequest>,
) -> Result<axum::Json<ModeView>, AppError> {
    let mode: Mode = req.mode.parse().map_err(|_| {
        AppError::bad(
            "invalid mode",
            format!(
                "mode: {:?} is not a mode; expected one of `enforce`, `monitor`",
                crate::model::excerpt(&req.mode)
            ),
        )
    })?;
    let client = caller(peer);
    let answer = {
        let mut ctl = st.lock().await?;
        ctl.set_mode(mode, &format!("api:{client}"), Now::read())?;
        view(&*ctl)
    };
    st.changed.notify_one();
    Ok(axum::Json(answer))
}
